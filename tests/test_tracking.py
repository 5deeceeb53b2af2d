"""`--mlflow_uri` on `scpermut run` and `scpermut label`: what lands in a local MLflow store."""

from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pytest
from test_run import invoke, write_samplesheet

pytest.importorskip("mlflow")

# One epoch per phase: the tracking is under test, not the model.
TINY = ["--min_genes", "100", "--n_top_genes", "300", "--epochs_warmup", "1", "--epochs_full", "1", "--epochs_finetune", "1", "--min_epochs", "0", "--hidden_layers", "16", "--latent_dim", "8", "--no-umap"]


@pytest.fixture
def store(tmp_path, monkeypatch):
    """A local MLflow folder store; MLflow writes nothing outside ``tmp_path``."""
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # scpermut sets it for folder stores
    monkeypatch.chdir(tmp_path)
    return tmp_path / "mlruns"


def _runs(uri):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name("scpermut").experiment_id])
    return client, {run.info.run_name: run for run in runs}


def _artifacts(client, run_id, path):
    return {item.path for item in client.list_artifacts(run_id, path)}


def _atlas(tmp_path, assets_dir):
    atlas = ad.read_h5ad(assets_dir / "test_data" / "cellbench_3cl_3tech.h5ad")
    hidden = np.random.default_rng(0).random(atlas.n_obs) < 1 / 3
    atlas.obs["cell_line"] = np.where(hidden, "unassigned", atlas.obs["cell_line"].astype(str))
    atlas.write_h5ad(tmp_path / "atlas.h5ad")
    return tmp_path / "atlas.h5ad"


LABEL_KEYS = ["--class_key", "cell_line", "--batch_key", "batch", "--unlabeled_category", "unassigned"]


def test_run_logs_params_epochs_record_report_and_model(tmp_path, assets_dir, store):
    data = assets_dir / "test_data"
    sheet = write_samplesheet(
        tmp_path / "sheet.csv",
        [("ctrl101", data / "kang_ctrl101.h5ad", "reference", "cell_type"), ("stim107", data / "kang_stim107.h5ad", "query", "cell_type")],
    )
    uri = store.as_uri()
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "results", "--mlflow_uri", uri, *TINY)
    assert result.exit_code == 0, result.output
    client, runs = _runs(uri)
    assert set(runs) == {"run results"}
    run = runs["run results"]
    assert run.info.status == "FINISHED"
    assert run.data.params["hidden_layers"] == "(16,)" and run.data.params["epochs_full"] == "1"
    assert run.data.params["class_key"] == "cell_type" and run.data.params["n_top_genes"] == "300"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3  # one per epoch, three phases
    assert 0 <= run.data.metrics["balanced_accuracy"] <= 1  # the report's headline
    assert "run.json" in _artifacts(client, run.info.run_id, None)
    assert "report/report.html" in _artifacts(client, run.info.run_id, "report")
    assert "report/metrics.json" in _artifacts(client, run.info.run_id, "report")
    assert "model/model.weights.h5" in _artifacts(client, run.info.run_id, "model")


def test_label_logs_to_a_plain_folder_path(tmp_path, assets_dir, store):
    atlas = _atlas(tmp_path, assets_dir)
    result = invoke("label", atlas, *LABEL_KEYS, "--outdir", tmp_path / "out", "--mlflow_uri", store, *TINY)
    assert result.exit_code == 0, result.output
    client, runs = _runs(str(store))
    run = runs["label out"]
    assert run.info.status == "FINISHED"
    assert run.data.params["class_key"] == "cell_line" and run.data.params["unlabeled_category"] == "unassigned"
    assert len(client.get_metric_history(run.info.run_id, "loss")) == 3
    assert run.data.metrics["n_cells_annotated"] > 0
    assert "report/report.html" in _artifacts(client, run.info.run_id, "report")
    assert "model/model.weights.h5" in _artifacts(client, run.info.run_id, "model")


def test_a_failed_label_run_is_marked_failed(tmp_path, assets_dir, store):
    atlas = _atlas(tmp_path, assets_dir)
    missing = tmp_path / "no-model"
    result = invoke("label", atlas, *LABEL_KEYS, "--outdir", tmp_path / "out", "--model", missing, "--mlflow_uri", store)
    assert result.exit_code == 1 and "model folder not found" in result.output
    _, runs = _runs(str(store))
    assert runs["label out"].info.status == "FAILED"
    assert not runs["label out"].data.metrics


def test_without_mlflow_the_command_stops_with_one_sentence(tmp_path, assets_dir, store, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # `import mlflow` raises ImportError
    atlas = _atlas(tmp_path, assets_dir)
    result = invoke("label", atlas, *LABEL_KEYS, "--outdir", tmp_path / "out", "--mlflow_uri", store)
    assert result.exit_code == 1
    assert "--mlflow_uri needs MLflow: pip install 'scpermut[tracking]'." in result.output
    assert not (tmp_path / "out").exists()  # stopped before any work
