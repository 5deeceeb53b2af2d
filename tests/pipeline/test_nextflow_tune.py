"""`--tune N` run for real: TUNE_PLAN -> N TUNE_TRIAL tasks -> TUNE_SELECT -> TRAIN on the best trial's options."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from test_nextflow_run import (  # noqa: F401
    explain,
    nextflow,
    pipeline,
    process_of,
    pytestmark,
    task_counts,
    trace_rows,
)

pytest.importorskip("optuna")

TUNE_TASKS = {"SCPERMUT_TUNE_PLAN": 1, "SCPERMUT_TUNE_TRIAL": 2, "SCPERMUT_TUNE_SELECT": 1, "SCPERMUT_TRAIN": 1}


@pytest.fixture(scope="module")
def tune_run(pipeline, tmp_path_factory):  # noqa: F811
    """`nextflow run <pipeline> -profile test --tune 2` (its -profile test trials keep the tiny sizes)."""
    launch = tmp_path_factory.mktemp("tune_launch")
    outdir = launch / "results"
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "--tune", "2", "--outdir", str(outdir), "--trace_report_suffix", "tune"],
        launch,
    )
    assert result.returncode == 0, explain(result, launch)
    return launch, outdir


def test_tune_runs_one_task_per_trial_and_trains_with_the_best(tune_run):
    launch, outdir = tune_run
    counts = task_counts(outdir, "tune")
    assert {name: counts.get(name) for name in TUNE_TASKS} == TUNE_TASKS
    assert sorted(path.name for path in (outdir / "tune" / "trials").iterdir()) == ["trial_000.json", "trial_001.json"]

    trials = pd.read_csv(outdir / "tune" / "trials.tsv", sep="\t")
    assert trials["number"].tolist() == [0, 1]
    best_row = trials.loc[trials["score"].idxmax()]
    best = json.loads((outdir / "tune" / "best_params.json").read_text())
    assert best["learning_rate"] == pytest.approx(best_row["params_learning_rate"])
    assert best["epochs_full"] == 2  # --tune_fixed of -profile test: not searched

    (train,) = [row for row in trace_rows(outdir, "tune") if process_of(row) == "SCPERMUT_TRAIN"]
    (workdir,) = (launch / "work").glob(f"{train['hash']}*")
    assert "--params best_params.json" in (workdir / ".command.sh").read_text()
    run = json.loads((outdir / "model" / "run.json").read_text())
    assert run["validation"]["balanced_accuracy"] == pytest.approx(best_row["balanced_accuracy"], abs=1e-4)
    assert "scpermut: Tuning trials" in (outdir / "multiqc" / "multiqc_report.html").read_text()


def test_tune_resume_reruns_nothing(pipeline, tune_run):  # noqa: F811
    launch, outdir = tune_run
    result = nextflow(
        ["run", str(pipeline), "-profile", "test", "--tune", "2", "--outdir", str(outdir), "-resume", "--trace_report_suffix", "tune_resume"],
        launch,
    )
    assert result.returncode == 0, explain(result, launch)
    rows = trace_rows(outdir, "tune_resume")
    assert {name: task_counts(outdir, "tune_resume").get(name) for name in TUNE_TASKS} == TUNE_TASKS
    assert [row["name"] for row in rows if row["status"] != "CACHED"] == []


@pytest.mark.parametrize(("tune", "given_model", "expected"), [("0", False, set()), ("2", True, set()), ("2", False, {"SCPERMUT_TUNE_PLAN", "SCPERMUT_TUNE_TRIAL", "SCPERMUT_TUNE_SELECT"})])
def test_tune_steps_run_only_with_tune_and_no_model(pipeline, tmp_path, tune, given_model, expected):  # noqa: F811
    outdir = tmp_path / "results"
    args = ["run", str(pipeline), "-profile", "test", "-stub", "--tune", tune, "--outdir", str(outdir), "--trace_report_suffix", "stub"]
    if given_model:
        (tmp_path / "model").mkdir()
        args += ["--model", str(tmp_path / "model")]
    result = nextflow(args, tmp_path)
    assert result.returncode == 0, explain(result, tmp_path)
    counts = task_counts(outdir, "stub")
    assert {name for name in counts if name.startswith("SCPERMUT_TUNE")} == expected
    assert ("SCPERMUT_TRAIN" in counts) == (not given_model)
    # A search that cannot happen is said, not silently dropped.
    assert ("--tune 2 is ignored: --model" in result.stdout + result.stderr) == (given_model and tune != "0")
