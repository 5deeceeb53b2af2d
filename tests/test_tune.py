"""`scpermut tune` (seeded, resumable Optuna search) and `--params` on train."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from click.testing import CliRunner
from test_training import make_prepared

from scpermut.cli import main

pytest.importorskip("optuna")

# 1 epoch per phase, tiny network: a trial takes a few seconds on one core.
TINY = ["--epochs_warmup", "1", "--epochs_full", "1", "--epochs_finetune", "1", "--min_epochs", "0", "--hidden_layers", "16"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "prepared.h5ad"
    make_prepared(n_cells=150).write_h5ad(path)
    return path


def _tune(prepared, out, trials, seed=3):
    result = CliRunner().invoke(main, ["tune", str(prepared), "--out", str(out), "--trials", str(trials), "--seed", str(seed), *TINY])
    assert result.exit_code == 0, result.output
    return pd.read_csv(out / "trials.tsv", sep="\t")


def _params(table):
    return table.filter(like="params_").drop(columns="params_hidden_layers", errors="ignore")


def test_search_is_seeded_and_resumes(prepared, tmp_path):
    first = _tune(prepared, tmp_path / "a", 2)
    assert len(first) == 2 and set(first["state"]) == {"COMPLETE"}
    assert "params_hidden_layers" not in first  # given on the command line: fixed
    assert {"params_latent_dim", "params_learning_rate", "params_dann_weight", "params_align_weight"} <= set(first)
    again = _tune(prepared, tmp_path / "b", 2)
    pd.testing.assert_frame_equal(_params(first), _params(again))
    pd.testing.assert_series_equal(first["value"], again["value"])
    resumed = _tune(prepared, tmp_path / "a", 3)
    assert len(resumed) == 3
    pd.testing.assert_frame_equal(_params(resumed).iloc[:2], _params(first))
    assert not _params(resumed).iloc[2].equals(_params(first).iloc[0])  # the resumed sampler draws anew
    report = (tmp_path / "a" / "tune_report.html").read_text()  # rewritten by the resumed search
    assert report.count("<tr>") == 1 + 3 and 'data-figure="param_importance"' in report
    best = json.loads((tmp_path / "a" / "best_params.json").read_text())
    row = resumed.loc[resumed["value"].idxmax()]
    assert best["latent_dim"] == row["params_latent_dim"]
    assert 0 <= row["user_attrs_balanced_accuracy"] <= 1 and 0 <= row["user_attrs_batch_mixing"] <= 1
    import optuna

    study = optuna.load_study(study_name="scpermut-tune", storage=f"sqlite:///{tmp_path / 'a' / 'study.db'}")
    assert all(trial.intermediate_values for trial in study.trials)  # the pruner sees every classifier epoch


def test_params_file_sets_train_options_and_flags_win(prepared, tmp_path):
    params = tmp_path / "best_params.json"
    params.write_text(json.dumps({"latent_dim": 6, "hidden_layers": [12], "dropout": 0.25, "learning_rate": 0.002}))
    out = tmp_path / "model"
    result = CliRunner().invoke(main, ["train", str(prepared), "--out", str(out), "--params", str(params), *TINY[:8], "--dropout", "0.05"])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "config.json").read_text())["network"]
    assert record["latent_dim"] == 6 and list(record["hidden_layers"]) == [12]
    assert record["dropout"] == 0.05  # the flag wins over the file


def test_params_file_unknown_key_is_one_sentence(prepared, tmp_path):
    params = tmp_path / "bad.json"
    params.write_text(json.dumps({"latent_size": 6}))
    result = CliRunner().invoke(main, ["train", str(prepared), "--out", str(tmp_path / "m"), "--params", str(params)])
    assert result.exit_code == 1
    assert f"{params}: not an option of this command: 'latent_size'" in result.output


def test_mlflow_tracking_logs_params_epochs_and_run_record(prepared, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # scpermut sets it for file: URIs
    monkeypatch.chdir(tmp_path)
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    args = ["--mlflow_uri", uri, *TINY]
    result = CliRunner().invoke(main, ["train", str(prepared), "--out", str(tmp_path / "model"), *args])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["tune", str(prepared), "--out", str(tmp_path / "tune"), "--trials", "1", *args])
    assert result.exit_code == 0, result.output
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("scpermut").experiment_id])
    by_name = {run.info.run_name: run for run in runs}
    assert set(by_name) == {"train model", "tune trial 0"}
    train = by_name["train model"]
    assert train.data.params["hidden_layers"] == "(16,)" and train.data.params["epochs_full"] == "1"
    assert len(client.get_metric_history(train.info.run_id, "loss")) == 3  # one per epoch, three phases
    assert "balanced_accuracy" in train.data.metrics
    assert "run.json" in {item.path for item in client.list_artifacts(train.info.run_id)}
    assert "model/model.weights.h5" in {item.path for item in client.list_artifacts(train.info.run_id, "model")}
    assert {"score", "batch_mixing"} <= set(by_name["tune trial 0"].data.metrics)


def test_label_and_run_read_params_files(tmp_path, monkeypatch):
    from scpermut.errors import InputError
    from scpermut.steps import label as label_step

    seen = {}

    def fake_label_atlas(atlas, outdir, run_options, **kwargs):
        seen["options"] = run_options
        raise InputError("stopped by the test.")

    monkeypatch.setattr(label_step, "label_atlas", fake_label_atlas)
    params = tmp_path / "p.json"
    params.write_text(json.dumps({"latent_dim": 7, "classifier": False, "min_genes": 150, "n_top_genes": 500}))
    atlas = tmp_path / "atlas.h5ad"
    result = CliRunner().invoke(main, ["label", str(atlas), "--outdir", str(tmp_path / "o"), "--params", str(params), "--n_top_genes", "800"])
    assert result.exit_code == 1 and "stopped by the test" in result.output
    options = seen["options"]
    assert options.training["latent_dim"] == 7 and options.training["use_classifier"] is False
    assert options.qc.min_genes == 150 and options.prepare.n_top_genes == 800  # the flag wins
    params.write_text(json.dumps({"epochs": 3}))
    sheet = tmp_path / "sheet.csv"
    sheet.write_text("sample,h5ad\ns1,missing.h5ad\n")
    result = CliRunner().invoke(main, ["run", "--input", str(sheet), "--outdir", str(tmp_path / "r"), "--params", str(params)])
    assert result.exit_code == 1 and f"{params}: not an option of this command: 'epochs'" in result.output


def _study(n_trials):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        latent_dim, dropout = trial.suggest_int("latent_dim", 8, 64), trial.suggest_float("dropout", 0.0, 0.5)
        trial.set_user_attr("balanced_accuracy", latent_dim / 64)
        trial.set_user_attr("batch_mixing", 0.5)
        return 0.7 * latent_dim / 64 + 0.3 * 0.5 - 0.01 * dropout

    study.optimize(objective, n_trials=n_trials)
    return study


def test_tune_report_shows_trials_history_and_importance():
    from scpermut.report.tune import tune_report

    report = tune_report(_study(6), mixing_weight=0.3, seed=0)
    table = report.split('data-table="trials"')[1].split("</table>")[0]
    assert table.count("<tr>") == 1 + 6
    for column in ("trial", "state", "score", "balanced accuracy", "batch mixing", "latent_dim", "dropout"):
        assert f">{column}</th>" in table
    assert 'data-figure="optimisation_history"' in report and 'data-figure="param_importance"' in report
    assert report.count("data:image/png;base64,") == 2  # self-contained
    again = tune_report(_study(6), mixing_weight=0.3, seed=0)
    assert again.split("<main>")[1] == report.split("<main>")[1]  # the importance estimate is seeded


def test_tune_report_says_when_too_few_trials_for_importance():
    from scpermut.report.tune import tune_report

    report = tune_report(_study(1), mixing_weight=0.3, seed=0)
    assert "Too few completed trials to estimate parameter importance" in report
    assert 'data-figure="param_importance"' not in report and 'data-figure="optimisation_history"' in report
