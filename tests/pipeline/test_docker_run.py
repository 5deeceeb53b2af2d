"""`nextflow run -profile test,docker` for real: every task in the images `tools/build-images` builds.

Needs the docker command, a daemon that answers and the images under the names the modules
pull (`tools/build-images --print`), built from this checkout. Without them these tests skip
and say what is missing; under SCPERMUT_REQUIRE_DOCKER=1 (`.ci/run` sets it) that is a failure
instead. The runs are few and shared: one run with `--tune 2`, so that every process of the
pipeline runs in its image (then `-resume`), one `--model` run and one `-stub` run with
`-profile docker,gpu`. The plain path (TRAIN on its flags) runs without containers in
test_nextflow_run.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from test_nextflow_run import (  # noqa: F401
    REPO,
    TASKS,
    check_test_profile_outputs,
    explain,
    nextflow,
    pipeline,
    process_of,
    pytestmark,
    task_counts,
    trace_rows,
)
from test_nextflow_tune import TUNE_TASKS

VERSION = next(
    line.split('"')[1] for line in (REPO / "pyproject.toml").read_text().splitlines() if line.startswith("version = ")
)


def _images() -> list[str]:
    """The scpermut and MultiQC images, as tools/build-images names them (after the base image)."""
    result = subprocess.run([str(REPO / "tools" / "build-images"), "--print"], capture_output=True, text=True, check=True)
    return result.stdout.split()[1:]


def _docker_missing() -> str | None:
    if shutil.which("docker") is None:
        return "no docker command on PATH"
    info = subprocess.run(["docker", "info"], capture_output=True, text=True, check=False)
    if info.returncode != 0:
        return f"no Docker daemon answers ({(info.stderr.strip().splitlines() or ['docker info failed'])[-1]})"
    missing = [
        image
        for image in _images()
        if subprocess.run(["docker", "image", "inspect", image], capture_output=True, check=False).returncode != 0
    ]
    if missing:
        return f"images not built: {', '.join(missing)} (run tools/build-images)"
    scpermut_image = next(image for image in _images() if "/scpermut:" in image)
    inspect = subprocess.run(["docker", "image", "inspect", scpermut_image], capture_output=True, text=True, check=True)
    built_from = (json.loads(inspect.stdout)[0]["Config"].get("Labels") or {}).get("org.scpermut.source-digest", "")
    checkout = subprocess.run(
        [str(REPO / "tools" / "build-images"), "--digest"], capture_output=True, text=True, check=True
    ).stdout.strip()
    if built_from != checkout:
        return f"{scpermut_image} was built from another checkout (source digest {built_from or 'none'}, this one {checkout}): run tools/build-images"
    return None


@pytest.fixture(scope="module", autouse=True)
def docker_ready():
    reason = _docker_missing()
    if reason and os.environ.get("SCPERMUT_REQUIRE_DOCKER") == "1":
        pytest.fail(f"SCPERMUT_REQUIRE_DOCKER=1 but {reason}")
    if reason:
        pytest.skip(reason)


def _run(pipeline: Path, launch: Path, outdir: Path, suffix: str, *args: str) -> subprocess.CompletedProcess:
    return nextflow(
        ["run", str(pipeline), "-profile", "test,docker", "--outdir", str(outdir), "--trace_report_suffix", suffix, *args],
        launch,
    )


def _task_file(launch: Path, row: dict, name: str = ".command.run") -> str:
    """A file of the task a trace row names, from the launch folder's work/."""
    (workdir,) = (launch / "work").glob(f"{row['hash']}*")
    return (workdir / name).read_text()


TUNED_TASKS = {**TASKS, **TUNE_TASKS}


@pytest.fixture(scope="module")
def docker_run(pipeline, tmp_path_factory):  # noqa: F811
    """`-profile test,docker --tune 2`: every process of the pipeline, each in its image."""
    launch = tmp_path_factory.mktemp("docker_launch")
    outdir = launch / "results"
    result = _run(pipeline, launch, outdir, "docker", "--tune", "2")
    assert result.returncode == 0, explain(result, launch)
    return launch, outdir


def test_every_task_runs_in_its_image_and_publishes_the_outputs(docker_run):
    launch, outdir = docker_run
    check_test_profile_outputs(outdir, "docker", TUNED_TASKS)
    multiqc_image, = [image for image in _images() if "multiqc" in image]
    for row in trace_rows(outdir, "docker"):
        image = multiqc_image if process_of(row).startswith("MULTIQC") else f"ghcr.io/scpermut/scpermut:{VERSION}"
        command = _task_file(launch, row)
        assert "docker run" in command and f" {image} " in command, (row["name"], command)
        assert "--gpus" not in command
    # The image's installed package answered, not this checkout's src/; the key libraries too.
    versions = (outdir / "pipeline_info" / "scpermut_software_mqc_versions.yml").read_text()
    assert f"scpermut: {VERSION}" in versions
    for tool in ["tensorflow", "keras", "numpy", "scanpy", "anndata"]:
        assert re.search(rf"(?m)^ +{tool}: [0-9]", versions), tool


def test_docker_tune_trains_with_the_best_trial(docker_run):
    launch, outdir = docker_run
    best = json.loads((outdir / "tune" / "best_params.json").read_text())
    assert best["epochs_full"] == 2  # --tune_fixed of -profile test: not searched
    (train,) = [row for row in trace_rows(outdir, "docker") if process_of(row) == "SCPERMUT_TRAIN"]
    assert "--params best_params.json" in _task_file(launch, train, ".command.sh")


def test_multiqc_sections_come_in_the_configured_order(docker_run):
    _launch, outdir = docker_run
    report = (outdir / "multiqc" / "multiqc_report.html").read_text()
    shown = re.findall(r'<h2 class="mqc-module-title" id="([^"]+)"', report)
    order = yaml.safe_load((REPO / "assets" / "multiqc_config.yml").read_text())["report_section_order"]
    configured = sorted(order, key=lambda section: -order[section]["order"])
    assert shown == [section for section in configured if section in shown]
    assert set(configured) - set(shown) == {"software_versions"}, shown


def test_docker_resume_reruns_nothing(pipeline, docker_run):  # noqa: F811
    launch, outdir = docker_run
    result = _run(pipeline, launch, outdir, "docker_resume", "--tune", "2", "-resume")
    assert result.returncode == 0, explain(result, launch)
    rows = trace_rows(outdir, "docker_resume")
    assert task_counts(outdir, "docker_resume") == TUNED_TASKS
    assert [row["name"] for row in rows if row["status"] != "CACHED"] == []


def test_docker_given_model_skips_training(pipeline, docker_run):  # noqa: F811
    launch, outdir = docker_run
    model_out = launch / "results_model"
    result = _run(pipeline, launch, model_out, "docker_model", "--model", str(outdir / "model"))
    assert result.returncode == 0, explain(result, launch)
    counts = task_counts(model_out, "docker_model")
    # Mapping onto a saved model prepares, maps and reports each sample in its own tasks.
    per_sample = {"SCPERMUT_PREPARE", "SCPERMUT_PREDICT", "SCPERMUT_REPORT"}
    samples = TASKS["SCPERMUT_QC"]
    assert counts == {name: samples if name in per_sample else n for name, n in TASKS.items() if name != "SCPERMUT_TRAIN"}
    assert len(list((model_out / "annotated").glob("*/annotated.h5ad"))) == samples


@pytest.fixture
def gpu_image_tag():
    """The CPU image also named as the GPU image, unless that is built: `-stub` runs none of TensorFlow."""
    cpu = f"ghcr.io/scpermut/scpermut:{VERSION}"
    gpu = f"{cpu}-gpu"
    if subprocess.run(["docker", "image", "inspect", gpu], capture_output=True, check=False).returncode == 0:
        yield gpu
        return
    subprocess.run(["docker", "tag", cpu, gpu], check=True)
    yield gpu
    subprocess.run(["docker", "rmi", gpu], capture_output=True, check=False)


def test_docker_gpu_stub_asks_docker_for_the_gpu(pipeline, tmp_path, gpu_image_tag):  # noqa: F811
    """-profile test,docker,gpu -stub on a machine without a GPU: TRAIN's container asks for GPU 0
    and Docker refuses it (no GPU-capable runtime): the task fails instead of training on the CPU."""
    outdir = tmp_path / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test,docker,gpu", "-stub", "--outdir", str(outdir), "--trace_report_suffix", "gpu"],
        tmp_path,
    )
    assert result.returncode != 0, explain(result, tmp_path)
    rows = trace_rows(outdir, "gpu")
    (train,) = [row for row in rows if process_of(row) == "SCPERMUT_TRAIN"]
    assert train["status"] == "FAILED", train
    assert "could not select device driver" in _task_file(tmp_path, train, ".command.err") + explain(result, tmp_path)
    command = _task_file(tmp_path, train)
    assert f" {gpu_image_tag} " in command
    assert '--gpus "\\"device=${CUDA_VISIBLE_DEVICES:-0}\\""' in command, command
    assert 'export TF_FORCE_GPU_ALLOW_GROWTH="true"' in command
    others = [row for row in rows if process_of(row) != "SCPERMUT_TRAIN"]
    assert {process_of(row) for row in others} >= {"SCPERMUT_QC", "SCPERMUT_PREPARE"}
    for row in others:
        assert "--gpus" not in _task_file(tmp_path, row), row["name"]
