"""`scpermut run` and `scpermut label` on the shipped data: the three use cases and bad input.

(1) transfer labels between batches: the test samplesheet, control donors -> stimulated donors;
(2) complete an atlas of which only a fraction is labelled;
(3) map a new query onto a saved model without retraining.
"""

from __future__ import annotations

import hashlib
import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from scpermut import constants
from scpermut.cli import main

# Small and fast: a few epochs, the QC the shipped cells pass (169+ detected genes).
FAST = [
    "--min_genes",
    "100",
    "--n_top_genes",
    "500",
    "--epochs_warmup",
    "2",
    "--epochs_full",
    "6",
    "--epochs_finetune",
    "2",
    "--hidden_layers",
    "64",
    "--latent_dim",
    "16",
]
STEP_FILES = [
    "qc/ctrl101.qc.h5ad",
    "qc/stim107.qc_summary.json",
    "prepare/prepared.h5ad",
    "model/model.weights.h5",
    "model/history.csv",
    "annotated/annotated.h5ad",
    "report/report.html",
    "report/metrics.json",
    "report/scpermut_metrics_mqc.tsv",
    "report/scpermut_qc_mqc.tsv",
]


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def write_samplesheet(path, rows):
    path.write_text(
        "sample,h5ad,role,label_col\n" + "".join(f"{','.join(map(str, row))}\n" for row in rows)
    )
    return path


@pytest.fixture(scope="module")
def transfer_run(tmp_path_factory, samplesheet_test):
    outdir = tmp_path_factory.mktemp("run") / "results"
    result = invoke("run", "--input", samplesheet_test, "--outdir", outdir, "--query_h5ad", *FAST)
    assert result.exit_code == 0, result.output
    return outdir, result.output


def test_run_transfers_labels_from_control_to_stimulated_donors(transfer_run):
    outdir, output = transfer_run
    for name in STEP_FILES:
        assert (outdir / name).is_file(), name
    metrics = json.loads((outdir / "report" / "metrics.json").read_text())
    assert metrics["evaluation_set"] == "query"
    assert metrics["headline"]["n_cells_evaluated"] > 700  # the labelled stimulated cells
    assert metrics["headline"]["balanced_accuracy"] > 0.6  # 5 cell types: chance is 0.2
    assert metrics["headline"]["batch_entropy"] <= 1.05
    assert f"report: {outdir / 'report' / 'report.html'}" in output
    assert "balanced accuracy" in output


# The latent must mix batches clearly better than the uncorrected data it starts from (measured:
# scpermut latent ~0.89, PCA of the same genes ~0.55-0.63 on the shipped cells).
MIN_MIXING_GAIN_OVER_PCA = 0.1


def test_run_latent_mixes_batches_better_than_uncorrected_pca_of_the_same_cells(transfer_run):
    """Baseline computed here: PCA (as many components as the latent) of the log-normalised genes the model uses."""
    from sklearn.decomposition import PCA

    from scpermut.metrics import batch_mixing

    outdir, _ = transfer_run
    prepared = ad.read_h5ad(outdir / "prepare" / "prepared.h5ad")
    annotated = ad.read_h5ad(outdir / "annotated" / "annotated.h5ad")
    assert list(prepared.obs_names) == list(annotated.obs_names)
    latent = annotated.obsm[constants.LATENT]
    genes = prepared.var["highly_variable"].to_numpy()
    pca = PCA(n_components=latent.shape[1], random_state=0).fit_transform(prepared[:, genes].X.toarray())
    batches = annotated.obs["batch"].astype(str).to_numpy()
    ours = batch_mixing(latent, batches)["batch_entropy"]
    baseline = batch_mixing(pca, batches)["batch_entropy"]
    print(f"batch entropy: scpermut latent {ours:.3f}, uncorrected PCA {baseline:.3f}")
    assert ours >= baseline + MIN_MIXING_GAIN_OVER_PCA
    metrics = json.loads((outdir / "report" / "metrics.json").read_text())
    assert metrics["headline"]["batch_entropy"] >= baseline + MIN_MIXING_GAIN_OVER_PCA


def test_run_maps_a_new_query_onto_the_saved_model_without_retraining(
    transfer_run, tmp_path, assets_dir
):
    outdir, _ = transfer_run
    model = outdir / "model"
    weights = hashlib.sha256((model / "model.weights.h5").read_bytes()).hexdigest()
    sheet = write_samplesheet(
        tmp_path / "query.csv",
        [("stim107", assets_dir / "test_data" / "kang_stim107.h5ad", "query", "cell_type")],
    )
    result = invoke(
        "run",
        "--input",
        sheet,
        "--outdir",
        tmp_path / "mapped",
        "--model",
        model,
        "--min_genes",
        "100",
    )
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "mapped" / "model").exists()
    assert hashlib.sha256((model / "model.weights.h5").read_bytes()).hexdigest() == weights

    mapped = ad.read_h5ad(tmp_path / "mapped" / "annotated" / "annotated.h5ad")
    first = ad.read_h5ad(outdir / "annotated" / "annotated.h5ad")
    first = first[first.obs["scpermut_sample"] == "stim107"]
    shared = mapped.obs_names.intersection(first.obs_names)
    assert len(shared) == mapped.n_obs
    # Only the gene set the library size is computed over differs: predictions barely move.
    agreement = np.mean(
        mapped.obs.loc[shared, constants.PREDICTION].astype(str).to_numpy()
        == first.obs.loc[shared, constants.PREDICTION].astype(str).to_numpy()
    )
    assert agreement > 0.9
    assert json.loads((tmp_path / "mapped" / "report" / "metrics.json").read_text())["inputs"][
        "model"
    ] == str(model)


def test_label_completes_an_atlas_of_which_a_third_is_labelled(tmp_path, assets_dir):
    atlas = ad.read_h5ad(assets_dir / "test_data" / "cellbench_3cl_3tech.h5ad")
    hidden = np.random.default_rng(0).random(atlas.n_obs) < 2 / 3
    truth = atlas.obs["cell_line"].astype(str).to_numpy()
    atlas.obs["cell_line"] = np.where(hidden, "unassigned", truth)
    atlas.write_h5ad(tmp_path / "atlas.h5ad")

    result = invoke(
        "label",
        tmp_path / "atlas.h5ad",
        "--class_key",
        "cell_line",
        "--batch_key",
        "batch",
        "--unlabeled_category",
        "unassigned",
        "--outdir",
        tmp_path / "out",
        *FAST,
    )
    assert result.exit_code == 0, result.output
    annotated = ad.read_h5ad(tmp_path / "out" / "annotated" / "annotated.h5ad")
    assert set(annotated.obs[constants.SPLIT].astype(str)) == {"train", "validation", "calibration", "unlabelled"}  # 4 labelled batches: one calibrates
    completed = annotated.obs[constants.SPLIT].astype(str) == "unlabelled"
    original = dict(zip(atlas.obs_names, truth))
    correct = annotated.obs.loc[completed, constants.PREDICTION].astype(str).to_numpy() == np.array(
        [original[name] for name in annotated.obs_names[completed]]
    )
    assert correct.mean() > 0.8  # three cell lines, easy to tell apart
    assert (tmp_path / "out" / "report" / "report.html").is_file()


def test_a_missing_input_file_stops_before_any_output(tmp_path, assets_dir):
    sheet = write_samplesheet(
        tmp_path / "sheet.csv",
        [
            ("ctrl101", assets_dir / "test_data" / "kang_ctrl101.h5ad", "reference", "cell_type"),
            ("gone", tmp_path / "gone.h5ad", "query", ""),
        ],
    )
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "out")
    assert result.exit_code == 1
    assert "file" in result.output and "gone.h5ad" in result.output and "not found" in result.output
    assert not (tmp_path / "out").exists()


def test_an_absent_label_column_removes_the_outputs_already_written(tmp_path, assets_dir):
    data = assets_dir / "test_data"
    sheet = write_samplesheet(
        tmp_path / "sheet.csv",
        [
            ("ctrl101", data / "kang_ctrl101.h5ad", "reference", "cell_type"),
            ("ctrl107", data / "kang_ctrl107.h5ad", "reference", "celltype"),
        ],
    )
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "out", "--min_genes", "100")
    assert result.exit_code == 1
    assert "label column 'celltype' does not exist" in result.output
    assert not (tmp_path / "out").exists()  # ctrl101's QC had been written, then removed


def test_an_unlabelled_reference_sample_maps_onto_a_saved_model(transfer_run, tmp_path, assets_dir):
    """Nothing trains under --model, so a reference sample without labels is annotated (every cell)
    instead of stopping at prepare; without --model it still stops before training."""
    outdir, _ = transfer_run
    cells = ad.read_h5ad(assets_dir / "test_data" / "kang_ctrl107.h5ad")
    cells.obs["cell_type"] = "Unknown"
    cells.write_h5ad(tmp_path / "unlabelled.h5ad")
    sheet = write_samplesheet(tmp_path / "unlabelled.csv", [("ctrl107", tmp_path / "unlabelled.h5ad", "reference", "cell_type")])
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "mapped", "--model", outdir / "model", "--min_genes", "100")
    assert result.exit_code == 0, result.output
    annotated = ad.read_h5ad(tmp_path / "mapped" / "annotated" / "annotated.h5ad")
    assert annotated.obs[constants.PREDICTION].notna().all()
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "trained", "--min_genes", "100", *FAST)
    assert result.exit_code == 1 and "hold 0 cell type" in result.output


def test_a_query_sharing_no_gene_with_the_model_fails_clearly(transfer_run, tmp_path, assets_dir):
    query = ad.read_h5ad(assets_dir / "test_data" / "kang_stim107.h5ad")
    query.var_names = [f"mouse_{name}" for name in query.var_names]
    query.write_h5ad(tmp_path / "renamed.h5ad")
    sheet = write_samplesheet(
        tmp_path / "sheet.csv", [("renamed", tmp_path / "renamed.h5ad", "query", "cell_type")]
    )
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("kept")
    result = invoke(
        "run",
        "--input",
        sheet,
        "--outdir",
        tmp_path / "out",
        "--model",
        transfer_run[0] / "model",
        "--min_genes",
        "100",
    )
    assert result.exit_code == 1
    assert "none of the model's" in result.output and "mouse_" in result.output
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["notes.txt"]


def test_run_writes_labels_the_query_on_its_own_genes_and_records_no_partial_path(transfer_run, assets_dir):
    outdir, output = transfer_run
    labels = pd.read_csv(outdir / "annotated" / constants.LABELS_FILE, sep="\t")
    annotated = ad.read_h5ad(outdir / "annotated" / constants.ANNOTATED_FILE)
    assert len(labels) == annotated.n_obs and set(labels["sample"]) == {"ctrl101", "ctrl107", "stim101", "stim107"}
    assert labels.loc[labels["annotated"], "sample"].isin(["stim101", "stim107"]).all()
    query = ad.read_h5ad(outdir / "annotated" / constants.QUERY_FILE)
    own = ad.read_h5ad(assets_dir / "test_data" / "kang_stim101.h5ad")
    assert query.n_obs == int(labels["annotated"].sum()) and query.n_vars == own.n_vars  # every gene, not the model's 500
    stim101 = query[query.obs[constants.SAMPLE] == "stim101"]
    assert (stim101.X != own[stim101.obs_names].X).nnz == 0  # the file's own counts
    assert f"labels (barcode, sample, label, confidence): {outdir / 'annotated' / constants.LABELS_FILE}" in output
    records = [outdir / "report" / "report.html", outdir / "report" / "metrics.json", outdir / "model" / "run.json", outdir / "prepare" / "prepare_summary.json"]
    for path in records:
        assert constants.PARTIAL_FOLDER not in path.read_text(), path
    assert constants.PARTIAL_FOLDER not in annotated.uns[constants.UNS]["prediction"]["source"]
    html = (outdir / "report" / "report.html").read_text()
    for name in ("composition_by_scpermut_sample", "confidence_per_type", "least_confident_cells", "umap_origin"):
        assert f'"{name}"' in html, name


@pytest.mark.parametrize("with_model", [True, False])
def test_a_query_on_ensembl_ids_stops_before_training_naming_the_file_and_the_symbol_column(transfer_run, tmp_path, assets_dir, with_model):
    """`run` (and `label`, the same chain) apply --max_missing_genes as `predict` does, before any training."""
    query = ad.read_h5ad(assets_dir / "test_data" / "kang_stim107.h5ad")
    query.var["symbol"] = query.var_names.to_numpy()
    renamed = query.var_names.to_numpy().copy()
    renamed[: int(0.9 * len(renamed))] = [f"ENSG{i:011d}" for i in range(int(0.9 * len(renamed)))]
    query.var_names = renamed
    query.write_h5ad(tmp_path / "ensembl.h5ad")
    rows = [("stim107", tmp_path / "ensembl.h5ad", "query", "cell_type")]
    if not with_model:
        rows.insert(0, ("ctrl101", assets_dir / "test_data" / "kang_ctrl101.h5ad", "reference", "cell_type"))
    model = ["--model", transfer_run[0] / "model"] if with_model else []
    sheet = write_samplesheet(tmp_path / "sheet.csv", rows)
    result = invoke("run", "--input", sheet, "--outdir", tmp_path / "out", *model, *FAST)
    assert result.exit_code == 1
    assert f"{tmp_path / 'ensembl.h5ad'}: " in result.output and "--max_missing_genes 50%" in result.output
    assert "var column 'symbol' holds the model's gene names" in result.output
    assert "[3/5] train" not in result.output and not (tmp_path / "out").exists()


def test_run_refuses_to_mix_with_an_earlier_run(transfer_run, samplesheet_test):
    result = invoke("run", "--input", samplesheet_test, "--outdir", transfer_run[0])
    assert result.exit_code == 1
    assert "--overwrite" in result.output
    assert (transfer_run[0] / "report" / "report.html").is_file()
