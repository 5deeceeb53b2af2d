"""Each module's script, rendered with the ``-profile test`` values, runs on the shipped data and writes every declared output; so does its ``stub:``."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from nextflow_text import (
    BlankList,
    Process,
    evaluate,
    render_gstring,
)
from nf_contract import (
    EXT_ARGS,
    MODULES,
    PROCESSES,
    REPO,
    STEP_TIMEOUT,
    TEST_PARAMS,
    samples_with_meta,
    task_environment,
)

# --------------------------------------------------------------------------------------
# Running each module's script, as rendered with -profile test
# --------------------------------------------------------------------------------------


@dataclass
class TaskResult:
    workdir: Path
    outputs: dict[str, list[Path]] = field(default_factory=dict)
    versions: list[tuple[str, str, str]] = field(default_factory=list)


def stage(workdir: Path, process: Process, values: dict) -> dict:
    """Link input files into the task folder as Nextflow stages them; return the script scope."""
    scope = {}
    for kind, name, stage_as in process.inputs:
        value = values[name]
        if kind == "val":
            scope[name] = value
            continue
        files = value if isinstance(value, list) else [value]
        staged = BlankList()
        for index, source in enumerate(files, start=1):
            relative = Path(
                stage_as.replace("?", str(index)).replace("*", source.name)
                if stage_as
                else source.name
            )
            (workdir / relative).parent.mkdir(parents=True, exist_ok=True)
            (workdir / relative).symlink_to(source.resolve())
            staged.append(relative)
        scope[name] = staged if isinstance(value, list) else staged[0]
    return scope




def run_task(name: str, values: dict, workdir: Path, section: str = "script") -> TaskResult:
    """Render a module's script (or stub) with -profile test values, run it, check its outputs."""
    process = PROCESSES[name]
    workdir.mkdir(parents=True)
    scope = stage(workdir, process, values)
    task = {
        "process": f"SCPERMUT:{process.name}",
        "cpus": 2,
        "ext": {"when": None, "use_gpu": None},
    }
    closure = EXT_ARGS.get(process.name)
    if closure:
        task["ext"]["args"] = evaluate(closure, {"params": TEST_PARAMS, **scope, "task": task})
    script = process.render({**scope, "task": task, "params": TEST_PARAMS}, section)
    (workdir / ".command.sh").write_text(script)
    run = subprocess.run(
        ["bash", "-euo", "pipefail", ".command.sh"],
        cwd=workdir,
        env=task_environment(),
        capture_output=True,
        text=True,
        timeout=STEP_TIMEOUT,
    )
    assert run.returncode == 0, f"{process.name} {section} failed:\n{script}\n{run.stderr[-4000:]}"

    result = TaskResult(workdir)
    for output in process.outputs:
        if output["kind"] == "path":
            pattern = (
                render_gstring(output["pattern"], scope)
                if output["quote"] == '"'
                else output["pattern"]
            )
            matches = sorted(p for p in workdir.glob(pattern) if not p.is_symlink())
            declared = f"declared output {pattern!r} ({output['emit']})"
            assert matches or output["optional"], (
                f"{process.name} {section}: {declared} not written"
            )
            result.outputs.setdefault(output["emit"], []).extend(matches)
        elif section == "script":  # a stub's eval outputs run the same commands
            evaluated = subprocess.run(
                ["bash", "-c", output["command"]],
                cwd=workdir,
                env=task_environment(),
                capture_output=True,
                text=True,
            )
            assert evaluated.returncode == 0 and evaluated.stdout.strip(), (
                f"{process.name}: eval({output['command']!r}) gave {evaluated.stderr}"
            )
            step = evaluate(output["step"], {"task": task})
            result.versions.append((step, output["tool"], evaluated.stdout.strip()))
    return result


class PipelineRun:
    """The -profile test chain, run once per session; each step runs when first asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.results: dict[str, object] = {}

    def step(self, name: str) -> TaskResult | list[TaskResult]:
        if name not in self.results:
            try:
                self.results[name] = getattr(self, f"_{name}")()
            except (Exception, pytest.skip.Exception) as error:  # remembered for later steps
                self.results[name] = error
        result = self.results[name]
        if isinstance(result, pytest.skip.Exception):
            raise result
        if isinstance(result, Exception):
            raise AssertionError(f"step {name} failed") from result
        return result

    def _qc(self):
        samples = samples_with_meta(REPO / "assets" / "samplesheet_test.csv")
        # One task per sample, two at a time, as Nextflow would run them on two cpus.
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(
                pool.map(
                    lambda sample: run_task(
                        "qc",
                        {"meta": sample[0], "h5ad": sample[1]},
                        self.root / f"qc_{sample[0]['id']}",
                    ),
                    samples,
                )
            )

    def _prepare(self):
        h5ads = [path for task in self.step("qc") for path in task.outputs["h5ad"]]
        return run_task(
            "prepare", {"meta": {"id": "merged"}, "qc_h5ads": h5ads}, self.root / "prepare"
        )

    def _train(self):
        (prepared,) = self.step("prepare").outputs["h5ad"]
        return run_task(
            "train",
            {"meta": {"id": "merged"}, "prepared": prepared, "best_params": BlankList()},
            self.root / "train",
        )

    def _predict(self):
        (prepared,) = self.step("prepare").outputs["h5ad"]
        (model,) = self.step("train").outputs["model"]
        return run_task(
            "predict",
            {"meta": {"id": "merged"}, "h5ad": prepared, "model": model},
            self.root / "predict",
        )

    def _report(self):
        (annotated,) = self.step("predict").outputs["h5ad"]
        (model,) = self.step("train").outputs["model"]
        return run_task(
            "report",
            {"meta": {"id": "merged"}, "annotated": annotated, "model": model},
            self.root / "report",
        )

    def _multiqc_version(self):
        if shutil.which("multiqc", path=task_environment()["PATH"]) is None:
            pytest.skip(
                "multiqc is not installed here; the MULTIQC modules run in its biocontainer"
            )
        return run_task("multiqc_version", {}, self.root / "multiqc_version")

    def _multiqc(self):
        tasks = [*self.scpermut_tasks(), self.step("multiqc_version")]
        report = self.step("report")
        versions = self.root / "scpermut_software_mqc_versions.yml"
        versions.write_text(versions_yaml([v for task in tasks for v in task.versions]))
        files = [*report.outputs["multiqc_files"], versions]
        config = REPO / "assets" / "multiqc_config.yml"
        inputs = {
            "multiqc_files": files,
            "multiqc_config": config,
            "extra_multiqc_config": BlankList(),
        }
        return run_task("multiqc", inputs, self.root / "multiqc")

    def scpermut_tasks(self) -> list[TaskResult]:
        """Every scpermut task of the chain (one QC per sample)."""
        return [
            *self.step("qc"),
            *(self.step(name) for name in ("prepare", "train", "predict", "report")),
        ]


def versions_yaml(entries) -> str:
    """What workflows/scpermut.nf collects from the versions topic."""
    grouped: dict[str, set[str]] = {}
    for task_name, tool, version in set(entries):
        grouped.setdefault(task_name.split(":")[-1], set()).add(f"    {tool}: {version}")
    return (
        "\n".join(
            f"{step}:\n" + "\n".join(sorted(lines)) for step, lines in sorted(grouped.items())
        )
        + "\n"
    )


@pytest.fixture(scope="session")
def pipeline_run(tmp_path_factory) -> PipelineRun:
    return PipelineRun(tmp_path_factory.mktemp("pipeline_test_profile"))


def test_qc_module_writes_its_declared_outputs_per_sample(pipeline_run):
    tasks = pipeline_run.step("qc")
    assert [task.outputs["h5ad"][0].name for task in tasks] == [
        "ctrl101.qc.h5ad",
        "ctrl107.qc.h5ad",
        "stim101.qc.h5ad",
        "stim107.qc.h5ad",
    ]
    import anndata as ad

    query = ad.read_h5ad(tasks[2].outputs["h5ad"][0], backed="r")
    assert set(query.obs["scpermut_role"]) == {"query"}
    assert query.n_obs > 400, "the test profile's QC must keep the shipped cells (169+ genes each)"


def test_prepare_module_writes_its_declared_outputs(pipeline_run):
    task = pipeline_run.step("prepare")
    summary = json.loads(task.outputs["summary"][0].read_text())
    assert [Path(p).name for p in summary["inputs"]] == [
        "ctrl101.qc.h5ad",
        "ctrl107.qc.h5ad",
        "stim101.qc.h5ad",
        "stim107.qc.h5ad",
    ]
    assert summary["settings"]["n_top_genes"] == TEST_PARAMS["n_top_genes"]


def test_train_module_writes_its_declared_outputs(pipeline_run):
    (model,) = pipeline_run.step("train").outputs["model"]
    assert (model / "model.weights.h5").is_file() and (model / "config.json").is_file()


def test_predict_module_writes_its_declared_outputs(pipeline_run):
    import anndata as ad

    (annotated,) = pipeline_run.step("predict").outputs["h5ad"]
    adata = ad.read_h5ad(annotated)
    assert "X_scpermut" in adata.obsm and "scpermut_prediction" in adata.obs


def test_report_module_writes_its_declared_outputs(pipeline_run):
    task = pipeline_run.step("report")
    assert "scpermut_metrics_mqc.tsv" in {p.name for p in task.outputs["multiqc_files"]}


def test_multiqc_module_reports_the_scpermut_sections_and_versions(pipeline_run):
    task = pipeline_run.step("multiqc")
    (data_dir,) = task.outputs["data"]
    assert (data_dir / "multiqc_scpermut_metrics_table.txt").is_file(), sorted(
        p.name for p in data_dir.iterdir()
    )
    versions = (data_dir / "multiqc_software_versions.txt").read_text()
    assert "SCPERMUT_TRAIN" in versions and "tensorflow" in versions, versions
    ((step, tool, multiqc_version),) = pipeline_run.step("multiqc_version").versions
    assert (step, tool) == ("MULTIQC", "multiqc")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?", multiqc_version), multiqc_version
    header, *rows = [line.split("\t") for line in versions.splitlines()]
    table = {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}
    assert table["MULTIQC"]["multiqc"] == multiqc_version, versions


def test_module_versions_are_reported(pipeline_run):
    versions = {
        (task_name.split(":")[-1], tool): version
        for task in pipeline_run.scpermut_tasks()
        for task_name, tool, version in task.versions
    }
    from scpermut import __version__

    assert versions[("SCPERMUT_QC", "scpermut")] == __version__
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", versions[("SCPERMUT_TRAIN", "tensorflow")])
    parsed = yaml.safe_load(
        versions_yaml([(f"SCPERMUT:{step}", tool, v) for (step, tool), v in versions.items()])
    )
    assert parsed["SCPERMUT_TRAIN"] == {
        "scpermut": __version__,
        "tensorflow": versions[("SCPERMUT_TRAIN", "tensorflow")],
    }


@pytest.mark.parametrize("name", list(MODULES))
def test_stub_writes_every_declared_output(name, tmp_path):
    process = PROCESSES[name]
    inputs_dir = tmp_path / "inputs"
    inputs_dir.mkdir()
    values = {}
    for kind, input_name, _ in process.inputs:
        if kind == "val":
            values[input_name] = {"id": "sample1", "role": "reference"}
        else:
            dummy = inputs_dir / f"{input_name}.h5ad"
            dummy.touch()
            values[input_name] = [dummy] if input_name.endswith("s") else dummy
    values = {k: (BlankList() if k == "extra_multiqc_config" else v) for k, v in values.items()}
    run_task(name, values, tmp_path / "task", section="stub")


