"""Prediction and label transfer on the shipped data: accuracy on held-out batches, batch mixing, queries, files."""

from __future__ import annotations

import shutil

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from sklearn.metrics import balanced_accuracy_score

from scpermut import constants
from scpermut.annotation import annotate
from scpermut.cli import main
from scpermut.errors import InputError
from scpermut.metrics import batch_mixing
from scpermut.model.api import Model
from scpermut.steps.train import train_file

# Small and short enough for the default test run, long enough to learn the 5 PBMC types.
TEST_SETTINGS = {
    "hidden_layers": (128, 64),
    "latent_dim": 16,
    "batch_size": 64,
    "epochs_warmup": 5,
    "epochs_full": 12,
    "epochs_finetune": 3,
    "patience": 4,
}
# Measured with TEST_SETTINGS, seeds 0/1/2: query balanced accuracy 0.89/0.88/0.86; kNN batch
# entropy (normalised by log 4 when measured; scpermut.metrics normalises by the data set's own batch
# entropy, a little lower, so scores run slightly higher) 0.68/0.68/0.65 with the adversary, 0.48/0.49/0.48 without. The thresholds keep a wide margin.
MIN_QUERY_BALANCED_ACCURACY = 0.7
MIN_MIXING_GAIN = 0.05


@pytest.fixture(scope="session")
def prepared(prepared_path) -> ad.AnnData:
    return ad.read_h5ad(prepared_path)


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prepared_path) -> tuple[Model, object]:
    """A model trained with every module on (the in-memory object and its folder)."""
    model_dir = tmp_path_factory.mktemp("predict") / "model"
    model = train_file(prepared_path, model_dir, device="cpu", **TEST_SETTINGS)
    return model, model_dir


# A UMAP of the user's own, which annotation must leave alone.
USER_UMAP = np.arange(2.0)


@pytest.fixture(scope="session")
def annotated(prepared, trained) -> ad.AnnData:
    query = prepared.copy()
    query.obsm["X_umap"] = np.tile(USER_UMAP, (query.n_obs, 1))
    return annotate(query, trained[0], copy=True)


@pytest.fixture(scope="session")
def latent_uncorrected(prepared) -> np.ndarray:
    """The same model with both batch-correction terms off: no adversary, no class-batch alignment."""
    model = Model(align_weight=0.0, **TEST_SETTINGS).fit(prepared)
    return annotate(prepared, model, umap=False, copy=True).obsm[constants.LATENT]


def test_annotation_writes_every_documented_field(annotated, trained, tmp_path):
    n_cells, classes = annotated.n_obs, trained[0].classes
    assert annotated.obsm[constants.LATENT].shape == (n_cells, 16)
    assert annotated.obsm[constants.PROBABILITIES].shape == (n_cells, len(classes))
    np.testing.assert_allclose(annotated.obsm[constants.PROBABILITIES].sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(
        annotated.obs[constants.CONFIDENCE], annotated.obsm[constants.PROBABILITIES].max(axis=1)
    )
    assert list(annotated.obs[constants.PREDICTION].cat.categories) == [*classes, "Unknown"]  # Unknown is always a category
    # The final label: given where the reference is labelled, else the prediction (query cells too).
    split = annotated.obs[constants.SPLIT].astype(str)
    given = split.isin(["train", "validation"])
    final = annotated.obs[constants.LABEL].astype(str)
    assert (final[given] == annotated.obs.loc[given, "cell_type"].astype(str)).all()
    assert (final[~given] == annotated.obs.loc[~given, constants.PREDICTION].astype(str)).all()
    assert annotated.obsm[constants.UMAP].shape == (n_cells, 2)
    np.testing.assert_array_equal(annotated.obsm["X_umap"], np.tile(USER_UMAP, (n_cells, 1)))
    assert list(annotated.uns[constants.UNS]["classes"]) == classes
    assert annotated.uns[constants.UNS]["seed"] == 0
    annotated.write_h5ad(tmp_path / "annotated.h5ad")
    stored = ad.read_h5ad(tmp_path / "annotated.h5ad").uns[constants.UNS]
    assert stored["parameters"]["training"]["epochs_full"] == TEST_SETTINGS["epochs_full"]
    assert "tensorflow" in stored["versions"] and stored["training"]["device"] == "cpu"


def test_held_out_query_batches_are_predicted_clearly_better_than_chance(annotated):
    query = annotated[annotated.obs[constants.SPLIT] == constants.SPLIT_QUERY]
    score = balanced_accuracy_score(
        query.obs["cell_type"].astype(str), query.obs[constants.PREDICTION].astype(str)
    )
    print(f"query (stim101 + stim107) balanced accuracy: {score:.3f} (chance 0.2)")
    assert score >= MIN_QUERY_BALANCED_ACCURACY


def test_batch_correction_mixes_batches(annotated, latent_uncorrected):
    corrected = batch_mixing(annotated.obsm[constants.LATENT], annotated.obs["batch"])["batch_entropy"]
    uncorrected = batch_mixing(latent_uncorrected, annotated.obs["batch"])["batch_entropy"]
    print(
        f"kNN batch entropy (30 neighbours, 4 batches): correction on {corrected:.3f}, off {uncorrected:.3f}"
    )
    assert corrected >= uncorrected + MIN_MIXING_GAIN


def test_a_reloaded_model_predicts_identically(trained, prepared):
    model, model_dir = trained
    expression = prepared[:, prepared.var["highly_variable"].to_numpy()].X
    before, after = model.transform(expression), Model.load(model_dir).transform(expression)
    for key in ("latent", "class_probabilities"):
        np.testing.assert_array_equal(after[key], before[key])


def _raw_query(prepared, genes) -> ad.AnnData:
    """The query cells as a new raw-count file would bring them: no prepare record, genes in any order."""
    query = prepared[prepared.obs[constants.SPLIT] == constants.SPLIT_QUERY]
    counts = query[:, genes].layers[constants.COUNTS_LAYER]
    return ad.AnnData(
        X=sp.csr_matrix(counts), obs=query.obs[["cell_type"]].copy(), var=pd.DataFrame(index=genes)
    )


def test_a_new_query_with_shuffled_and_missing_genes_is_aligned(trained, prepared, annotated):
    model = trained[0]
    rng = np.random.default_rng(0)
    shuffled = list(rng.permutation(prepared.var_names))
    query = _raw_query(prepared, shuffled)
    annotate(query, model, umap=False, adapt=False)
    reference = annotated[annotated.obs[constants.SPLIT] == constants.SPLIT_QUERY]
    np.testing.assert_allclose(query.obsm[constants.LATENT], reference.obsm[constants.LATENT], atol=1e-4)
    assert query.uns[constants.UNS]["genes_missing"] == 0

    dropped = set(rng.choice(model.genes, size=len(model.genes) // 10, replace=False))
    partial = _raw_query(prepared, [gene for gene in shuffled if gene not in dropped])
    annotate(partial, model, umap=False, adapt=False)
    assert partial.uns[constants.UNS]["genes_missing"] == len(dropped)
    agreement = (
        partial.obs[constants.PREDICTION].astype(str).to_numpy()
        == reference.obs[constants.PREDICTION].astype(str).to_numpy()
    ).mean()
    assert agreement > 0.8


def test_missing_query_genes_become_zero_columns_and_are_counted(prepared):
    """The aligned matrix itself: present genes keep their values in the model's order, missing ones are all zero."""
    from scpermut.annotation import align_genes

    genes = list(prepared.var_names[prepared.var["highly_variable"].to_numpy()])
    rng = np.random.default_rng(1)
    dropped = set(rng.choice(genes, size=len(genes) // 10, replace=False))
    kept = [gene for gene in rng.permutation(prepared.var_names) if gene not in dropped]
    query = prepared[:, kept]
    aligned, n_missing = align_genes(query.X, query.var_names, genes, max_missing_genes=0.5)

    assert n_missing == len(dropped) > 0
    assert aligned.shape == (prepared.n_obs, len(genes))
    aligned = aligned.toarray()
    expected = prepared[:, genes].X.toarray()
    missing = np.isin(genes, list(dropped))
    assert expected[:, missing].any()  # the dropped genes were expressed: zeros are not by chance
    assert not aligned[:, missing].any()
    np.testing.assert_array_equal(aligned[:, ~missing], expected[:, ~missing])


def test_too_many_missing_genes_stop_clearly(trained, prepared):
    model = trained[0]
    few = _raw_query(prepared, model.genes[: len(model.genes) // 4])
    with pytest.raises(
        InputError,
        match=r"query: \d+ of the model's \d+ genes \(75%\) are missing.*`max_missing_genes`",
    ):
        annotate(few, model, umap=False, source="query")
    annotate(few, model, umap=False, max_missing_genes=0.8, adapt=False)
    assert few.uns[constants.UNS]["genes_missing"] == len(model.genes) - len(model.genes) // 4


def test_low_confidence_cells_become_unknown(trained, prepared, annotated):
    threshold = float(np.median(annotated.obs[constants.CONFIDENCE]))
    result = annotate(prepared, trained[0], unknown_threshold=threshold, umap=False, copy=True)
    assert "Unknown" in result.obs[constants.PREDICTION].cat.categories
    unknown = (result.obs[constants.PREDICTION] == "Unknown").to_numpy()
    np.testing.assert_array_equal(unknown, result.obs[constants.CONFIDENCE].to_numpy() < threshold)
    assert 0 < unknown.sum() < result.n_obs


def test_predict_command_writes_the_annotated_file(trained, prepared_path, tmp_path):
    out = tmp_path / "annotated.h5ad"
    result = CliRunner().invoke(
        main,
        ["predict", str(prepared_path), "--model", str(trained[1]), "--out", str(out), "--no-umap"],
    )
    assert result.exit_code == 0, result.output
    written = ad.read_h5ad(out)
    assert {constants.PREDICTION, constants.CONFIDENCE} <= set(written.obs.columns)
    assert constants.LATENT in written.obsm and constants.UMAP not in written.obsm
    missing = CliRunner().invoke(
        main, ["predict", str(prepared_path), "--model", str(tmp_path / "nope"), "--out", str(out)]
    )
    assert missing.exit_code == 1


def test_loading_checks_the_model_folder(trained, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained[1], copy)
    genes = (copy / constants.MODEL_GENES).read_text().splitlines()
    (copy / constants.MODEL_GENES).write_text("\n".join(genes[:-1]) + "\n")
    with pytest.raises(InputError, match=r"lists \d+ genes but the network was built for \d+"):
        Model.load(copy)
    (copy / constants.MODEL_WEIGHTS).unlink()
    with pytest.raises(InputError, match="missing model.weights.h5"):
        Model.load(copy)


def test_notebook_flow_without_files(prepared_path):
    """prepare_anndata -> Model.fit -> Model.predict, all in memory, as a notebook would do it."""
    from scpermut.data.preprocess import PrepareSettings, prepare_anndata

    raw = ad.read_h5ad(prepared_path)
    raw.X = raw.layers[constants.COUNTS_LAYER]
    raw.obs["is_query"] = raw.obs[constants.ROLE] == "query"
    adata = prepare_anndata(raw, query_key="is_query", settings=PrepareSettings(n_top_genes=500))
    model = Model(**{**TEST_SETTINGS, "epochs_full": 4, "epochs_finetune": 1}).fit(adata)
    model.predict(adata, umap=False)
    query = adata.obs[constants.SPLIT] == constants.SPLIT_QUERY
    score = balanced_accuracy_score(adata.obs.loc[query, "cell_type"], adata.obs.loc[query, constants.PREDICTION])
    assert score > 0.5  # chance is 0.2 with five types
    assert adata.obsm[constants.LATENT].shape == (adata.n_obs, TEST_SETTINGS["latent_dim"])


def test_a_raw_query_file_is_normalised_exactly_as_prepare_did(trained, prepared, assets_dir):
    """The raw stim101 file (all 1,267 genes) must give the same model input as its prepared rows."""
    from scpermut.annotation import log_normalised_expression

    record = trained[0].record
    raw = ad.read_h5ad(assets_dir / "test_data" / "kang_stim101.h5ad")
    expression, _ = log_normalised_expression(raw, record.preprocess, "kang_stim101.h5ad")
    rows = prepared[prepared.obs["scpermut_sample"] == "stim101"]
    genes = list(rows.var_names)
    from_raw = expression[:, raw.var_names.get_indexer(genes)].toarray()
    np.testing.assert_allclose(from_raw, rows.X.toarray(), rtol=1e-5, atol=1e-5)


def test_a_query_keeping_its_counts_in_raw_is_normalised_from_them(trained, assets_dir):
    """X normalised on a gene subset, every gene's counts in .raw (scanpy's habit): the counts are used."""
    import scanpy as sc

    counts = ad.read_h5ad(assets_dir / "test_data" / "kang_stim101.h5ad")
    query = counts.copy()
    query.raw = query.copy()
    sc.pp.normalize_total(query)
    sc.pp.log1p(query)
    query = query[:, :600].copy()
    from_raw = annotate(query, trained[0], adapt=False, umap=False, copy=True, source="raw.h5ad")
    from_counts = annotate(counts, trained[0], adapt=False, umap=False, copy=True, source="counts.h5ad")
    assert from_raw.uns[constants.UNS]["genes_missing"] == 0
    np.testing.assert_array_equal(from_raw.obsm[constants.LATENT], from_counts.obsm[constants.LATENT])


def test_scaled_or_wrongly_normalised_queries_are_refused(trained, prepared):
    from scpermut.annotation import log_normalised_expression

    preprocess = trained[0].record.preprocess
    query = prepared[:50].copy()
    del query.uns["scpermut_prepare"]
    counts = query.layers[constants.COUNTS_LAYER].toarray()
    del query.layers[constants.COUNTS_LAYER]
    query.X = sp.csr_matrix(np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e6))
    with pytest.raises(InputError, match="log-normalised to about 1e\\+06 counts per cell"):
        log_normalised_expression(query, preprocess, "cpm.h5ad")
    query.X = sp.csr_matrix(query.X.toarray() - 1.0)
    with pytest.raises(InputError, match="neither raw counts nor log-normalised"):
        log_normalised_expression(query, preprocess, "scaled.h5ad")


def test_a_query_file_without_a_batch_column_writes_a_readable_file(trained, prepared, tmp_path):
    """Its one batch is named after the file: the path's "/" made uns groups from the file's root."""
    query = prepared[prepared.obs[constants.ROLE] == "query"][:80].copy()
    del query.obs["batch"]
    source = str(tmp_path / "folder" / "query.h5ad")
    annotated = annotate(query, trained[0], umap=False, copy=True, source=source)
    annotated.write_h5ad(tmp_path / "annotated.h5ad")
    written = ad.read_h5ad(tmp_path / "annotated.h5ad")
    assert list(written.uns[constants.UNS]["adaptation"]["batches"]) == ["query.h5ad"]


def test_cells_without_any_count_on_the_model_genes_are_unknown(trained, prepared):
    query = prepared[:40].copy()
    counts = query.X.tolil()
    counts[:5] = 0
    query.X = counts.tocsr()
    result = annotate(query, trained[0], umap=False, copy=True)
    prediction = result.obs[constants.PREDICTION].astype(str).to_numpy()
    assert (prediction[:5] == "Unknown").all()
    assert (prediction[5:] != "Unknown").any()
