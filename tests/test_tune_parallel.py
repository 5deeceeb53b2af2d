"""The parallel search: `scpermut tune-plan`, `tune-trial`, `tune-select`, and `train --params` on its result."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from test_training import make_prepared
from test_tune import TINY

from scpermut.cli import main

pytest.importorskip("optuna")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune_parallel") / "prepared.h5ad"
    make_prepared(n_cells=150).write_h5ad(path)
    return path


def _invoke(*args):
    result = CliRunner().invoke(main, [str(arg) for arg in args])
    assert result.exit_code == 0, result.output
    return result


def _plan(out, trials=3, seed=5, *flags):
    _invoke("tune-plan", "--out", out, "--trials", trials, "--seed", seed, *flags)
    return {path.name: json.loads(path.read_text()) for path in sorted((out / "trials").glob("*.json"))}


FIXED = "hidden_layers,epochs_warmup,epochs_full,epochs_finetune"


def test_plan_is_seeded_and_leaves_fixed_options_out(tmp_path):
    first = _plan(tmp_path / "a", 3, 5, "--tune_fixed", FIXED)
    assert list(first) == ["trial_000.json", "trial_001.json", "trial_002.json"]
    assert [plan["number"] for plan in first.values()] == [0, 1, 2]
    assert first == _plan(tmp_path / "b", 3, 5, "--tune_fixed", FIXED)
    assert first != _plan(tmp_path / "c", 3, 6, "--tune_fixed", FIXED)
    drawn = [plan["options"] for plan in first.values()]
    assert all(not set(FIXED.split(",")) & set(options) and "latent_dim" in options for options in drawn)
    assert len({options["learning_rate"] for options in drawn}) == 3


def test_plan_names_an_option_it_cannot_fix(tmp_path):
    result = CliRunner().invoke(main, ["tune-plan", "--out", str(tmp_path), "--trials", "2", "--tune_fixed", "epochs_full,grl_lambda"])
    assert result.exit_code == 1
    assert "--tune_fixed: grl_lambda is not a searched option" in result.output


def test_trials_select_the_best_and_train_reproduces_it(prepared, tmp_path):
    plans = _plan(tmp_path / "plan", 2, 1, "--tune_fixed", FIXED)
    scores = []
    for name in plans:
        out = tmp_path / name.removesuffix(".json")
        # The trial file's options win over the flags (--latent_dim); the flags set the fixed ones.
        _invoke("tune-trial", prepared, tmp_path / "plan" / "trials" / name, "--out", out, *TINY, "--latent_dim", "3")
        scores.append(out / "score.json")
    results = [json.loads(path.read_text()) for path in scores]
    assert all(result["params"]["hidden_layers"] == [16] and result["params"]["epochs_full"] == 1 for result in results)
    assert [result["params"]["latent_dim"] for result in results] == [plan["options"]["latent_dim"] for plan in plans.values()]

    _invoke("tune-select", *reversed(scores), "--out", tmp_path / "best")
    best = max(results, key=lambda result: (result["score"], -result["number"]))
    assert json.loads((tmp_path / "best" / "best_params.json").read_text()) == best["params"]
    table = pd.read_csv(tmp_path / "best" / "trials.tsv", sep="\t")
    assert table["number"].tolist() == [0, 1]
    assert table["score"].round(6).tolist() == [round(result["score"], 6) for result in results]
    mqc = (tmp_path / "best" / "tune_trials_mqc.tsv").read_text()
    assert '# plot_type: "table"' in mqc and "trial 0\t" in mqc and "trial 1\t" in mqc

    model = tmp_path / "model"
    _invoke("train", prepared, "--out", model, "--params", tmp_path / "best" / "best_params.json")
    network = json.loads((model / "config.json").read_text())["network"]
    assert network["latent_dim"] == best["params"]["latent_dim"] and list(network["hidden_layers"]) == [16]
    run = json.loads((model / "run.json").read_text())
    assert run["validation"]["balanced_accuracy"] == pytest.approx(best["balanced_accuracy"])


def _score(folder, number, score):
    path = folder / f"score_{number}.json"
    path.write_text(json.dumps({"number": number, "score": score, "balanced_accuracy": score, "batch_mixing": 0.0, "params": {"latent_dim": number}}))
    return path


def test_select_breaks_ties_by_the_lowest_trial_number_whatever_the_order(tmp_path):
    files = [_score(tmp_path, 4, 0.7), _score(tmp_path, 2, 0.7), _score(tmp_path, 3, float("nan")), _score(tmp_path, 1, 0.5)]
    for order, out in ((files, "a"), (files[::-1], "b")):
        _invoke("tune-select", *order, "--out", tmp_path / out)
        assert json.loads((tmp_path / out / "best_params.json").read_text()) == {"latent_dim": 2}
    assert (tmp_path / "a" / "trials.tsv").read_text() == (tmp_path / "b" / "trials.tsv").read_text()


def test_select_names_a_score_file_that_is_not_one(tmp_path):
    bad = tmp_path / "score.json"
    bad.write_text(json.dumps({"number": 0}))
    result = CliRunner().invoke(main, ["tune-select", str(bad), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1
    assert f"{bad}: missing score, balanced_accuracy, batch_mixing, params" in result.output


def test_a_parallel_trial_is_tracked_like_a_sequential_one(prepared, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking import MlflowClient

    _plan(tmp_path / "plan", 1, 3, "--tune_fixed", FIXED)
    uri = str(tmp_path / "mlruns")
    _invoke("tune-trial", prepared, tmp_path / "plan" / "trials" / "trial_000.json", "--out", tmp_path / "t0", "--mlflow_uri", uri, *TINY)
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("scpermut").experiment_id])
    assert run.info.run_name == "tune trial 0" and run.info.status == "FINISHED"
    score = json.loads((tmp_path / "t0" / "score.json").read_text())
    assert run.data.metrics["score"] == pytest.approx(score["score"])
    assert run.data.params["latent_dim"] == str(score["params"]["latent_dim"])
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3  # one per epoch, three phases
