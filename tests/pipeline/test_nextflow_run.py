"""The Nextflow pipeline run for real: `nextflow run . -profile test`, local executor, no containers.

The runtime is the one `tools/get-nextflow` resolves from Maven Central (`.ci/run` fetches
it before pytest); without it these tests skip and say so. Each task calls `bin/scpermut`,
which runs this checkout's package with the Python that runs pytest.

nf-schema, the plugin nextflow.config declares, is not on Maven Central. When it is not
installed in $NXF_HOME/plugins, the runs use a copy of the pipeline whose initialisation
includes tests/pipeline/nf_schema_standin.nf instead (every process still runs for real),
and the tests of nf-schema's own behaviour (rejecting bad samplesheets with the schema's
messages, numeric-looking cells) skip with that reason.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import anndata as ad
import pytest
from nf_contract import BAD_SHEET_COLUMNS

REPO = Path(__file__).resolve().parents[2]
GET_NEXTFLOW = REPO / "tools" / "get-nextflow"
BAD_SAMPLESHEETS = Path(__file__).resolve().parent
STANDIN = BAD_SAMPLESHEETS / "nf_schema_standin.nf"


def _pinned(name: str) -> str:
    match = re.search(rf"^{name}=(\S+)$", GET_NEXTFLOW.read_text(), re.MULTILINE)
    assert match, f"{name} not found in tools/get-nextflow"
    return match.group(1)


NEXTFLOW_VERSION = _pinned("NEXTFLOW_VERSION")
NF_SCHEMA_VERSION = _pinned("NF_SCHEMA_VERSION")
NXF_HOME = Path(os.environ.get("NXF_HOME", Path.home() / ".nextflow"))
CACHE = Path(
    os.environ.get("SCPERMUT_NXF_CACHE")
    or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "scpermut-nextflow"
)
LAUNCHER = Path(
    os.environ.get("SCPERMUT_NEXTFLOW", CACHE / f"nextflow-{NEXTFLOW_VERSION}" / "nextflow")
)
HAS_NF_SCHEMA = any(
    (NXF_HOME / "plugins" / f"nf-schema-{NF_SCHEMA_VERSION}" / where / "MANIFEST.MF").is_file()
    for where in ["classes/META-INF", "META-INF"]
)

pytestmark = pytest.mark.skipif(
    not LAUNCHER.is_file(),
    reason=f"no Nextflow runtime at {LAUNCHER}: run tools/get-nextflow (.ci/run does)",
)
needs_nf_schema = pytest.mark.skipif(
    not HAS_NF_SCHEMA,
    reason=(
        f"nf-schema {NF_SCHEMA_VERSION} is not in {NXF_HOME}/plugins (it is not on Maven Central;"
        " install its release zip with tools/get-nextflow --install-plugin)"
    ),
)

TITLE = 'Anna\'s "atlas"'

# Every process of the DAG and how many tasks -profile test runs of each.
TASKS = {
    "SCPERMUT_QC": 4,
    "SCPERMUT_PREPARE": 1,
    "SCPERMUT_TRAIN": 1,
    "SCPERMUT_PREDICT": 1,
    "SCPERMUT_REPORT": 1,
    "MULTIQC_VERSION": 1,
    "MULTIQC": 1,
}


def nextflow(args: list[str], cwd: Path, timeout: int = 1500) -> subprocess.CompletedProcess:
    """Run the pinned Nextflow offline, tasks using this Python and this checkout's package."""
    env = dict(os.environ)
    env.update(
        NXF_HOME=str(NXF_HOME),
        NXF_OFFLINE="true",
        NXF_ANSI_LOG="false",
        NXF_DISABLE_CHECK_LATEST="true",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO / "src"), env.get("PYTHONPATH")])),
    )
    cwd.mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [str(LAUNCHER), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def explain(result: subprocess.CompletedProcess, cwd: Path) -> str:
    log = cwd / ".nextflow.log"
    tail = log.read_text().splitlines()[-60:] if log.is_file() else []
    return "\n".join([result.stdout[-6000:], result.stderr[-4000:], *tail])


def trace_rows(outdir: Path, suffix: str) -> list[dict]:
    trace = outdir / "pipeline_info" / f"execution_trace_{suffix}.txt"
    with trace.open() as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def process_of(row: dict) -> str:
    return row["name"].split(" (")[0].split(":")[-1]


def task_counts(outdir: Path, suffix: str) -> dict[str, int]:
    """How many tasks of each process the run's trace lists."""
    return dict(Counter(process_of(row) for row in trace_rows(outdir, suffix)))


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory) -> Path:
    """The pipeline to run: this checkout, or a copy using the nf-schema stand-in."""
    if HAS_NF_SCHEMA:
        return REPO
    copy = tmp_path_factory.mktemp("pipeline") / "scpermut"
    skip = {".git", ".venv", "work", ".nextflow", "results", "__pycache__", ".pytest_cache"}
    shutil.copytree(REPO, copy, ignore=lambda _dir, names: [n for n in names if n in skip])
    utils = copy / "subworkflows" / "local" / "utils_scpermut_pipeline" / "main.nf"
    shutil.copy(STANDIN, utils.parent / STANDIN.name)
    text = utils.read_text()
    assert "from 'plugin/nf-schema'" in text
    utils.write_text(text.replace("from 'plugin/nf-schema'", f"from './{STANDIN.stem}'"))
    config = copy / "nextflow.config"
    text, count = re.subn(r"\nplugins \{[^}]*\}\n", "\n", config.read_text())
    assert count == 1, "the plugins block of nextflow.config was not found"
    config.write_text(text)
    return copy


@pytest.fixture(scope="session")
def test_run(pipeline, tmp_path_factory):
    """`nextflow run <pipeline> -profile test`: the launch folder, its outdir and stdout."""
    launch = tmp_path_factory.mktemp("launch")
    outdir = launch / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "--outdir", str(outdir), "--trace_report_suffix", "first"],
        launch,
    )
    assert result.returncode == 0, explain(result, launch)
    return launch, outdir, result.stdout + result.stderr


def test_runtime_is_the_pinned_version():
    result = subprocess.run([str(LAUNCHER), "-version"], capture_output=True, text=True, check=True)
    assert f"version {NEXTFLOW_VERSION}" in result.stdout


def check_test_profile_outputs(outdir: Path, suffix: str, tasks: dict[str, int] = TASKS) -> None:
    """What a `-profile test` run publishes: every task once, annotated cells, reports, the model, pipeline_info."""
    import anndata

    for row in trace_rows(outdir, suffix):
        assert row["status"] == "COMPLETED", row
    assert task_counts(outdir, suffix) == tasks
    annotated = sorted((outdir / "annotated").glob("*.h5ad"))
    assert annotated, sorted(p.name for p in outdir.iterdir())
    adata = anndata.read_h5ad(annotated[0])
    assert "scpermut_prediction" in adata.obs
    assert "scpermut_confidence" in adata.obs
    assert "X_scpermut" in adata.obsm
    assert adata.n_obs > 0

    reports = list((outdir / "report").glob("*.html"))
    assert reports and "<html" in reports[0].read_text()[:2000].lower()
    multiqc = outdir / "multiqc" / "multiqc_report.html"
    assert multiqc.is_file() and multiqc.stat().st_size > 10_000
    assert (outdir / "model").is_dir()

    info = outdir / "pipeline_info"
    for name in [
        f"execution_trace_{suffix}.txt",
        f"execution_report_{suffix}.html",
        f"execution_timeline_{suffix}.html",
        f"pipeline_dag_{suffix}.html",
        f"params_{suffix}.json",
        "scpermut_software_mqc_versions.yml",
    ]:
        assert (info / name).is_file(), name
    versions = (info / "scpermut_software_mqc_versions.yml").read_text()
    assert f"Nextflow: {NEXTFLOW_VERSION}" in versions
    assert "SCPERMUT_TRAIN:" in versions and "multiqc:" in versions.lower()


def test_test_profile_runs_every_step_and_publishes_its_outputs(test_run):
    _launch, outdir, _log = test_run
    check_test_profile_outputs(outdir, "first")


def test_test_profile_warns_of_nothing(test_run):
    _launch, _outdir, log = test_run
    warnings = [
        line
        for line in log.splitlines()
        if line.startswith("WARN") and "test stand-in" not in line
    ]
    assert warnings == []


def test_resume_reruns_nothing(pipeline, test_run):
    launch, outdir, _log = test_run
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "--outdir", str(outdir), "-resume", "--trace_report_suffix", "resume"],
        launch,
    )
    assert result.returncode == 0, explain(result, launch)
    rows = trace_rows(outdir, "resume")
    assert {process_of(row) for row in rows} == set(TASKS)
    assert [row["name"] for row in rows if row["status"] != "CACHED"] == []


def test_given_model_skips_training_and_adapts_new_batches(pipeline, test_run):
    launch, outdir, _log = test_run
    model_out = launch / "results_model"
    # The stimulated samples under new ids: batches the model never trained on.
    sheet = launch / "new_samples.csv"
    with sheet.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["sample", "h5ad", "role"])
        for sample in ("stim101", "stim107"):
            writer.writerow([f"{sample}_new", pipeline / "assets" / "test_data" / f"kang_{sample}.h5ad", "query"])
    result = nextflow(
        [
            "run", str(pipeline), "-profile", "test", "--outdir", str(model_out), "--input", str(sheet),
            "--model", str(outdir / "model"), "--trace_report_suffix", "model",
            # Free text with both quotes goes through ext.args to the shell unchanged.
            "--multiqc_title", TITLE,
        ],
        launch,
    )
    assert result.returncode == 0, explain(result, launch)
    processes = [process_of(row) for row in trace_rows(model_out, "model")]
    assert "SCPERMUT_TRAIN" not in processes
    # Each sample is prepared, mapped and reported in tasks of its own.
    assert {name: processes.count(name) for name in ("SCPERMUT_PREPARE", "SCPERMUT_PREDICT", "SCPERMUT_REPORT")} == {
        "SCPERMUT_PREPARE": 2, "SCPERMUT_PREDICT": 2, "SCPERMUT_REPORT": 2,
    }
    for sample in ("stim101_new", "stim107_new"):
        annotated = ad.read_h5ad(model_out / "annotated" / sample / "annotated.h5ad")
        assert sorted(annotated.uns["scpermut"]["adaptation"]["batches"]) == [sample]
        assert (model_out / "report" / sample / "report.html").is_file()
    assert not (model_out / "model").exists()
    # MultiQC prefixes the report's name with the title.
    (report_file,) = (model_out / "multiqc").glob("*multiqc_report.html")
    report = report_file.read_text()
    # One row per sample in the scores table (the reports' rows are named by their sample).
    assert "stim101_new: " in report and "stim107_new: " in report
    # The per-sample tasks finish in any order; MULTIQC's inputs are sorted, so -resume reruns nothing.
    resumed = nextflow(
        [
            "run", str(pipeline), "-profile", "test", "--outdir", str(model_out), "--input", str(sheet),
            "--model", str(outdir / "model"), "--trace_report_suffix", "model_resume", "--multiqc_title", TITLE, "-resume",
        ],
        launch,
    )
    assert resumed.returncode == 0, explain(resumed, launch)
    assert [row["name"] for row in trace_rows(model_out, "model_resume") if row["status"] != "CACHED"] == []
    assert re.search(r"Anna(&#x27;|&#39;|')s (&quot;|\")atlas(&quot;|\")", report), "title lost"


def test_stub_run_completes(pipeline, tmp_path):
    outdir = tmp_path / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "-stub", "--outdir", str(outdir), "--trace_report_suffix", "stub"],
        tmp_path,
    )
    assert result.returncode == 0, explain(result, tmp_path)
    assert task_counts(outdir, "stub") == TASKS
    assert (outdir / "multiqc" / "multiqc_report.html").is_file()


LINTED = ["main.nf", "nextflow.config", "conf", "modules", "subworkflows", "workflows", "tests"]


def test_nextflow_lint_finds_nothing():
    # Every Nextflow script and config; nf-test.config is nf-test's, not Nextflow's.
    result = nextflow(["lint", *LINTED], REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "had no errors" in result.stdout
    assert "Linting: workflows/scpermut.nf" in result.stdout


@needs_nf_schema
@pytest.mark.parametrize(
    ("sheet", "column"),
    BAD_SHEET_COLUMNS,
)
def test_nf_schema_rejects_bad_samplesheets(pipeline, tmp_path, sheet, column):
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "-preview", "--input", str(BAD_SAMPLESHEETS / sheet), "--outdir", str(tmp_path / "results")],
        tmp_path,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert "Validation of file failed" in output or "validation failed" in output.lower(), output
    errors = [line for line in output.splitlines() if line.strip().startswith("->")]
    assert any(column in line for line in errors), output
    # The sentence assets/schema_input.json gives for the column (nf-schema's own for an
    # unknown column, a missing required one or a repeated sample).
    schema = json.loads((REPO / "assets" / "schema_input.json").read_text())
    message = schema["items"]["properties"].get(column, {}).get("errorMessage")
    if message and sheet not in {"duplicate_sample.csv", "missing_h5ad.csv"}:
        assert any(message in line for line in errors), output


@needs_nf_schema
def test_numeric_looking_sample_ids_and_labels_pass_nf_schema(pipeline, tmp_path):
    data = REPO / "assets" / "test_data"
    sheet = tmp_path / "numeric.csv"
    sheet.write_text(
        "sample,h5ad,role,batch_col,label_col,unknown_label\n"
        f"101,{data / 'kang_ctrl101.h5ad'},reference,,cell_type,-1\n"
        f"107,{data / 'kang_ctrl107.h5ad'},reference,,cell_type,0\n"
        f"201,{data / 'kang_stim101.h5ad'},query,,cell_type,\n"
    )
    outdir = tmp_path / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "-stub", "--input", str(sheet), "--outdir", str(outdir)],
        tmp_path,
    )
    assert result.returncode == 0, explain(result, tmp_path)
    assert sorted(p.name for p in (outdir / "qc").glob("*.qc.h5ad")) == [
        "101.qc.h5ad", "107.qc.h5ad", "201.qc.h5ad",
    ]


def test_user_multiqc_config_named_like_the_pipelines_does_not_collide(pipeline, tmp_path):
    """--multiqc_config multiqc_config.yml: the same name as assets/multiqc_config.yml."""
    user_config = tmp_path / "mine" / "multiqc_config.yml"
    user_config.parent.mkdir()
    user_config.write_text("report_comment: 'my own comment'\n")
    outdir = tmp_path / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "-stub", "--multiqc_config", str(user_config), "--outdir", str(outdir)],
        tmp_path,
    )
    assert result.returncode == 0, explain(result, tmp_path)
    assert (outdir / "multiqc" / "multiqc_report.html").is_file()


def _flat_config(pipeline: Path, profile: str, cwd: Path) -> str:
    result = nextflow(["config", "-flat", "-profile", profile, str(pipeline)], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.parametrize("profile", ["test", "test_full"])
def test_one_machine_profiles_cap_every_request(pipeline, tmp_path, profile):
    """test and test_full run on a laptop or a CI runner (4 cpus, 16 GB): they set resourceLimits."""
    flat = _flat_config(pipeline, profile, tmp_path)
    limits = re.search(r"^process\.resourceLimits = \[cpus:(\d+), memory:'(\d+) GB', time:'(\d+)h'\]", flat, re.M)
    assert limits, flat
    cpus, memory, hours = map(int, limits.groups())
    assert cpus <= 4 and memory <= 16 and hours <= 24


@needs_nf_schema
def test_help_names_the_pipeline_as_users_run_it(pipeline, tmp_path):
    result = nextflow(["run", str(pipeline), "--help"], tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "nextflow run scpermut/scpermut" in result.stdout


def test_stub_resume_reruns_nothing_with_a_new_report_suffix(pipeline, tmp_path):
    """The MultiQC inputs hold nothing that changes per launch (run name, report suffix)."""
    outdir = tmp_path / "results"
    for suffix in ["one", "two"]:
        result = nextflow(
            ["run", str(pipeline), "-profile", "test", "-stub", "-resume", "--outdir", str(outdir), "--trace_report_suffix", suffix],
            tmp_path,
        )
        assert result.returncode == 0, explain(result, tmp_path)
    assert [row["name"] for row in trace_rows(outdir, "two") if row["status"] != "CACHED"] == []


FAKE_DOCKER = """#!/usr/bin/env python3
# Stands in for `docker`: records each call, then runs the task's command on the host.
import json, os, subprocess, sys
args = sys.argv[1:]
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")
if not args or args[0] != "run":
    sys.exit(0)
workdir = args[args.index("-w") + 1] if "-w" in args else os.getcwd()
start = max(i for i, arg in enumerate(args) if arg in ("/bin/bash", "bash"))
sys.exit(subprocess.call(args[start:], cwd=workdir))
"""


@pytest.mark.parametrize(("visible", "device"), [(None, "0"), ("1", "1")])
def test_gpu_profile_gives_train_one_gpu_with_docker(pipeline, tmp_path, visible, device):
    """-profile test,docker,gpu on the local executor, Docker replaced by a recorder."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    log = tmp_path / "docker.log"
    outdir = tmp_path / "results"
    env_before = dict(os.environ)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ["FAKE_DOCKER_LOG"] = str(log)
    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
    if visible is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = visible
    try:
        result = nextflow(
            ["run", str(pipeline), "-profile", "test,docker,gpu", "-stub", "--outdir", str(outdir)], tmp_path
        )
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert result.returncode == 0, explain(result, tmp_path)
    runs = [json.loads(line) for line in log.read_text().splitlines()]
    runs = [args for args in runs if args and args[0] == "run"]
    train = [args for args in runs if any(a.endswith("scpermut:0.1.0-gpu") for a in args)]
    others = [args for args in runs if args not in train]
    assert len(train) == 1 and others, runs
    (args,) = train
    assert args[args.index("--gpus") + 1] == f'"device={device}"'
    # The config's env scope is exported inside the container, before the task runs.
    assert any('export TF_FORCE_GPU_ALLOW_GROWTH="true"' in a for a in args), args
    for args in others:
        assert "--gpus" not in args, args


def test_gpu_profile_adds_to_a_sites_process_settings(pipeline, tmp_path):
    """A site's beforeScript and containerOptions stay under -profile gpu; the GPU's come after."""
    bin_dir = tmp_path / "fake-bin"
    bin_dir.mkdir()
    (bin_dir / "docker").write_text(FAKE_DOCKER)
    (bin_dir / "docker").chmod(0o755)
    site = tmp_path / "site.config"
    site.write_text("process {\n    beforeScript = 'echo site-before'\n    containerOptions = '-e SITE_OPTION=1'\n}\n")
    outdir = tmp_path / "results"
    env_before = dict(os.environ)
    os.environ["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    os.environ["FAKE_DOCKER_LOG"] = str(tmp_path / "docker.log")
    try:
        result = nextflow(
            ["run", str(pipeline), "-profile", "test,docker,gpu", "-stub", "-c", str(site), "--outdir", str(outdir),
             "--trace_report_suffix", "site"],
            tmp_path,
        )
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    assert result.returncode == 0, explain(result, tmp_path)
    for row in trace_rows(outdir, "site"):
        (workdir,) = (tmp_path / "work").glob(f"{row['hash']}*")
        command = (workdir / ".command.run").read_text()
        assert "echo site-before" in command and "-e SITE_OPTION=1" in command, row["name"]
        gpu = process_of(row) == "SCPERMUT_TRAIN"
        assert ("--gpus" in command) == gpu, row["name"]
        assert ("SINGULARITYENV_CUDA_VISIBLE_DEVICES" in command) == gpu, row["name"]
        if gpu:
            assert command.index("echo site-before") < command.index("SINGULARITYENV_CUDA_VISIBLE_DEVICES")


def test_gpu_profile_accelerator_is_ignored_by_the_local_executor(pipeline, tmp_path):
    """accelerator = 1 on the local executor, no container, no GPU: TRAIN still runs."""
    outdir = tmp_path / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test,gpu", "-stub", "--outdir", str(outdir), "--trace_report_suffix", "gpu"],
        tmp_path,
    )
    assert result.returncode == 0, explain(result, tmp_path)
    assert "SCPERMUT_TRAIN" in {process_of(row) for row in trace_rows(outdir, "gpu")}


def test_gpu_profile_cluster_options_reach_a_grid_executor(pipeline, tmp_path):
    flat = _flat_config(pipeline, "slurm,gpu", tmp_path)
    assert "params.gpu_cluster_options = '--gres=gpu:1'" in flat
    assert "process.'withLabel:process_gpu'.clusterOptions = {" in flat
