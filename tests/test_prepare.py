"""prepare: gene alignment, normalisation, batch-aware HVGs, seeded stratified split, clear errors."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import TEST_N_TOP_GENES, make_counts

from scpermut.data.preprocess import PrepareSettings, prepare, stratified_split
from scpermut.data.qc import QCThresholds
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.steps.prepare import prepare_files
from scpermut.steps.qc import run_qc

LOOSE = QCThresholds(min_genes=0, min_cells=0)


def qc_sample(tmp_path, name, adata, role="reference"):
    adata.write_h5ad(tmp_path / f"{name}.h5ad")
    run_qc(SampleSpec(name, tmp_path / f"{name}.h5ad", role=role), tmp_path / "qc", LOOSE)
    return tmp_path / "qc" / f"{name}.qc.h5ad"


@pytest.fixture(scope="module")
def prepared(prepared_path):
    return ad.read_h5ad(prepared_path)


def test_shipped_data_is_merged_and_split(prepared, qc_dir):
    assert prepared.n_obs == 1556
    qc_genes = [set(ad.read_h5ad(p, backed="r").var_names) for p in sorted(qc_dir.glob("*.qc.h5ad"))]
    assert set(prepared.var_names) == set.intersection(*qc_genes)
    split = prepared.obs["scpermut_split"]
    assert (split[prepared.obs["scpermut_role"] == "query"] == "query").all()
    assert split.value_counts()["query"] == 806
    reference = prepared.obs["scpermut_role"] == "reference"
    assert split[reference].isin(["train", "validation"]).all()
    settings = prepared.uns["scpermut_prepare"]
    assert (settings["class_key"], settings["batch_key"], settings["seed"]) == ("cell_type", "batch", 0)
    assert set(prepared.uns["scpermut_qc"]) == {"ctrl101", "ctrl107", "stim101", "stim107"}


def test_validation_split_is_stratified_at_the_asked_fraction(prepared):
    labelled = prepared.obs[prepared.obs["scpermut_split"].isin(["train", "validation"])]
    by_class = pd.crosstab(labelled["cell_type"], labelled["scpermut_split"])
    fraction = by_class["validation"] / by_class.sum(axis=1)
    assert np.allclose(fraction, 0.2, atol=0.02), fraction


def test_matrix_stays_sparse_counts_kept_and_normalised(prepared):
    assert sp.issparse(prepared.X) and sp.issparse(prepared.layers["counts"])
    counts = prepared.layers["counts"]
    assert np.all(np.mod(counts.data, 1) == 0)
    cell = 7
    row = counts[cell].toarray().ravel()
    expected = np.log1p(row / row.sum() * 1e4)
    np.testing.assert_allclose(prepared.X[cell].toarray().ravel(), expected, rtol=1e-5)


def test_hvgs_are_batch_aware(prepared):
    assert prepared.var["highly_variable"].sum() == TEST_N_TOP_GENES
    assert "highly_variable_nbatches" in prepared.var
    hvg = prepared.var[prepared.var["highly_variable"]]
    rest = prepared.var[~prepared.var["highly_variable"]]
    assert hvg["highly_variable_nbatches"].mean() > rest["highly_variable_nbatches"].mean()


def test_split_is_seeded():
    labels = pd.Series(list("AAAAABBBBBCCCCCCCCCCD"))
    eligible = np.ones(len(labels), dtype=bool)
    first = stratified_split(labels, eligible, 0.4, seed=1)
    assert np.array_equal(first, stratified_split(labels, eligible, 0.4, seed=1))
    assert not np.array_equal(first, stratified_split(labels, eligible, 0.4, seed=2))
    assert first[labels == "D"].sum() == 0  # a single cell stays in training
    assert first[labels == "C"].sum() == 4


def test_the_model_genes_come_from_the_reference_and_a_query_is_zero_filled(tmp_path, caplog):
    a = make_counts(n_genes=30, prefix="a")
    b = make_counts(n_genes=30, prefix="b", seed=1)
    b.var_names = [f"G{j}" for j in range(5, 35)]
    paths = [qc_sample(tmp_path, "a", a), qc_sample(tmp_path, "b", b, role="query")]
    summary = prepare_files(paths, tmp_path / "out", PrepareSettings(min_shared_genes=10))
    assert summary["n_genes"] == 30  # the reference's genes, not the intersection
    assert summary["genes_lost_per_sample"] == {"a": 0, "b": 5}
    written = json.loads((tmp_path / "out" / "prepare_summary.json").read_text())
    assert written["genes_lost_per_sample"] == {"a": 0, "b": 5}
    prepared = ad.read_h5ad(tmp_path / "out" / "prepared.h5ad")
    query = prepared[prepared.obs["scpermut_role"] == "query"]
    assert query[:, ["G0", "G4"]].layers["counts"].sum() == 0  # missing in the query: zeros
    assert "sample b lacks 5 of the reference's 30 genes" in caplog.text


def test_a_query_sample_whose_every_cell_fails_qc_is_kept_and_the_genes_ranked_without_it(tmp_path):
    """scanpy cannot rank the genes of a batch without a count: the failed cells sit out the HVGs."""
    a = make_counts(n_genes=60, prefix="a")
    b = make_counts(n_genes=60, prefix="b", seed=1)
    b.X = sp.csr_matrix(b.shape, dtype=np.float32)
    a.write_h5ad(tmp_path / "a.h5ad")
    b.write_h5ad(tmp_path / "b.h5ad")
    paths = []
    for name, role in (("a", "reference"), ("b", "query")):
        run_qc(SampleSpec(name, tmp_path / f"{name}.h5ad", role=role), tmp_path / "qc", QCThresholds(min_genes=5))
        paths.append(tmp_path / "qc" / f"{name}.qc.h5ad")
    summary = prepare_files(paths, tmp_path / "out", PrepareSettings(n_top_genes=20, min_shared_genes=10))
    assert summary["cells_per_sample"] == {"a": 60, "b": 60}
    assert summary["n_highly_variable"] == 20


def test_reference_samples_sharing_too_few_genes_stop_clearly(tmp_path):
    a = make_counts(prefix="a")
    b = make_counts(prefix="b")
    b.var_names = [f"ENSG{j:05d}" for j in range(b.n_vars)]
    paths = [qc_sample(tmp_path, "a", a), qc_sample(tmp_path, "b", b)]
    with pytest.raises(InputError, match="share only 0 genes.*'b' has 40 genes, e.g. ENSG00000"):
        prepare_files(paths, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_query_sharing_no_gene_with_the_reference_stops_clearly(tmp_path):
    a = make_counts(prefix="a")
    b = make_counts(prefix="b")
    b.var_names = [f"ENSG{j:05d}" for j in range(b.n_vars)]
    paths = [qc_sample(tmp_path, "a", a), qc_sample(tmp_path, "b", b, role="query")]
    with pytest.raises(InputError, match="sample 'b' shares no gene with the reference"):
        prepare_files(paths, tmp_path / "out", PrepareSettings(min_shared_genes=10))
    assert not (tmp_path / "out").exists()


def test_a_query_named_by_ensembl_ids_is_told_the_var_column_holding_the_reference_names(tmp_path):
    a = make_counts(prefix="a")
    b = make_counts(prefix="b")
    b.var["gene_symbols"] = b.var_names.to_numpy()
    b.var_names = [f"ENSG{j:011d}" for j in range(b.n_vars)]
    paths = [qc_sample(tmp_path, "a", a), qc_sample(tmp_path, "b", b, role="query")]
    with pytest.raises(InputError, match=r"sample 'b' shares no gene .*var column 'gene_symbols' holds"):
        prepare_files(paths, tmp_path / "out", PrepareSettings(min_shared_genes=10))


def test_an_obs_column_of_different_types_across_samples_is_merged_as_text(tmp_path):
    a, b = make_counts(prefix="a"), make_counts(prefix="b", seed=2)
    a.obs["donor"] = 7
    b.obs["donor"] = "d8"
    paths = [qc_sample(tmp_path, "a", a), qc_sample(tmp_path, "b", b, role="query")]
    prepare_files(paths, tmp_path / "out", PrepareSettings(min_shared_genes=10))
    prepared = ad.read_h5ad(tmp_path / "out" / "prepared.h5ad")
    assert set(prepared.obs["donor"].astype(str)) == {"7", "d8"}


def test_duplicate_barcodes_across_samples_are_prefixed(tmp_path):
    paths = [qc_sample(tmp_path, "a", make_counts()), qc_sample(tmp_path, "b", make_counts(seed=3))]
    merged, _ = prepare([ad.read_h5ad(p) for p in paths], Keys(), PrepareSettings(min_shared_genes=10))
    assert merged.obs_names.is_unique
    assert merged.obs.loc["b_cell0", "barcode"] == "cell0"
    assert merged.obs.loc["b_cell0", "scpermut_sample"] == "b"


def test_no_labelled_reference_cell_is_prepared_for_mapping_with_a_warning(tmp_path, caplog):
    adata = make_counts()
    adata.obs["cell_type"] = "Unknown"
    with caplog.at_level("WARNING"):
        merged, summary = prepare([ad.read_h5ad(qc_sample(tmp_path, "a", adata))], Keys(), PrepareSettings(min_shared_genes=10))
    assert "no labelled cell: every reference cell has cell_type 'Unknown'" in caplog.text
    assert summary["cells_per_split"]["unlabelled"] == merged.n_obs and summary["n_classes"] == 0


def test_query_only_input_is_allowed_for_mapping(tmp_path):
    merged, summary = prepare([ad.read_h5ad(qc_sample(tmp_path, "q", make_counts(), role="query"))], Keys(), PrepareSettings(min_shared_genes=10))
    assert summary["cells_per_split"]["query"] == merged.n_obs


def test_inputs_not_from_qc_and_mismatched_keys_are_refused(tmp_path):
    make_counts().write_h5ad(tmp_path / "raw.h5ad")
    with pytest.raises(InputError, match=r"raw\.h5ad: not an output of `scpermut qc`"):
        prepare_files([tmp_path / "raw.h5ad"], tmp_path / "out")
    first = qc_sample(tmp_path, "a", make_counts())
    other = make_counts()
    other.obs["label"] = other.obs["cell_type"]
    other.write_h5ad(tmp_path / "b.h5ad")
    run_qc(SampleSpec("b", tmp_path / "b.h5ad"), tmp_path / "qc", LOOSE, Keys(class_key="label"))
    with pytest.raises(InputError, match="class_key is 'label' but 'cell_type'"):
        prepare_files([first, tmp_path / "qc" / "b.qc.h5ad"], tmp_path / "out")
    with pytest.raises(InputError, match="sample id\\(s\\) a appear in more than one QC file"):
        prepare_files([first, first], tmp_path / "out")


def test_prepare_anndata_in_memory_matches_the_contract():
    from scpermut.data.preprocess import prepare_anndata

    a = make_counts(n_cells=40, prefix="a", batch="b1")
    b = make_counts(n_cells=40, prefix="b", batch="b2", seed=1)
    adata = ad.concat([a, b])
    adata.obs["is_query"] = adata.obs["batch"] == "b2"
    adata.obs.loc["a0", "cell_type"] = None
    prepared = prepare_anndata(adata, query_key="is_query", settings=PrepareSettings(min_shared_genes=10, n_top_genes=20))
    split = prepared.obs["scpermut_split"]
    assert (split[adata.obs["is_query"].to_numpy()] == "query").all()
    assert split["a0"] == "unlabelled" and prepared.obs.loc["a0", "cell_type"] == "Unknown"
    assert prepared.var["highly_variable"].sum() == 20
    np.testing.assert_array_equal(prepared.layers["counts"].toarray(), adata.X.toarray())
    assert "scpermut_split" not in adata.obs  # the input is left alone
    with pytest.raises(InputError, match="column 'donor' does not exist in obs"):
        prepare_anndata(adata, keys=Keys(batch_key="donor"))


def test_prepare_writes_its_two_files_as_one_set(tmp_path, monkeypatch):
    paths = [qc_sample(tmp_path, "a", make_counts())]

    def fail(*args, **kwargs):
        raise TypeError("cannot write")

    monkeypatch.setattr(ad.AnnData, "write_h5ad", fail)
    with pytest.raises(TypeError):
        prepare_files(paths, tmp_path / "out", PrepareSettings(min_shared_genes=10))
    assert not (tmp_path / "out" / "prepare_summary.json").exists()
    assert not any((tmp_path / "out").iterdir())


def _obs(batch_sizes: dict, labels="ABC") -> pd.DataFrame:
    rows = [
        {"cell_type": labels[i % len(labels)], "batch": batch}
        for batch, size in batch_sizes.items()
        for i in range(size)
    ]
    return pd.DataFrame(rows)


def test_the_median_sized_labelled_batch_is_held_out_for_calibration():
    from scpermut.data.preprocess import calibration_cells

    obs = _obs({"small": 30, "middle": 60, "large": 300, "largest": 900})
    held_out = calibration_cells(obs, np.ones(len(obs), bool), Keys(), 1)
    assert set(obs.loc[held_out, "batch"]) == {"middle"} and held_out.sum() == 60
    assert set(obs.loc[calibration_cells(obs, np.ones(len(obs), bool), Keys(), 2), "batch"]) == {"middle", "large"}
    # Fewer than three labelled batches, or 0 asked: nothing is held out.
    two = _obs({"a": 50, "b": 50})
    assert not calibration_cells(two, np.ones(len(two), bool), Keys(), 1).any()
    assert not calibration_cells(obs, np.ones(len(obs), bool), Keys(), 0).any()


def test_a_type_scarce_outside_the_calibration_batch_stays_in_training():
    from scpermut.data.preprocess import calibration_cells

    obs = pd.concat([_obs({"a": 30, "b": 60, "c": 90}), pd.DataFrame([{"cell_type": "rare", "batch": "b"}] * 12)], ignore_index=True)
    held_out = calibration_cells(obs, np.ones(len(obs), bool), Keys(), 1)
    assert held_out.sum() == 60 and not held_out[obs["cell_type"].to_numpy() == "rare"].any()


def test_keep_genes_hvg_writes_the_model_genes_only_with_the_same_values():
    """--keep_genes hvg: the same cells, splits and values on the highly variable genes, the
    library sizes still summed over every shared gene, and a model trains on it as on the full file."""
    from scpermut.data.preprocess import prepare_anndata
    from scpermut.model.training_data import TrainingData

    adata = ad.concat([make_counts(n_cells=60, prefix="a", batch="b1"), make_counts(n_cells=60, prefix="b", batch="b2", seed=1)])
    settings = {"min_shared_genes": 10, "n_top_genes": 20}
    full = prepare_anndata(adata, settings=PrepareSettings(**settings))
    small = prepare_anndata(adata, settings=PrepareSettings(**settings, keep_genes="hvg"))
    hvgs = full.var_names[full.var["highly_variable"].to_numpy()]
    assert list(small.var_names) == list(hvgs) and small.var["highly_variable"].all()
    assert small.n_vars == 20 < full.n_vars
    np.testing.assert_array_equal(small.X.toarray(), full[:, hvgs].X.toarray())
    np.testing.assert_array_equal(small.layers["counts"].toarray(), full[:, hvgs].layers["counts"].toarray())
    assert list(small.obs["scpermut_split"]) == list(full.obs["scpermut_split"])
    np.testing.assert_array_equal(
        small.uns["scpermut_prepare"]["normalisation_genes"], full.uns["scpermut_prepare"]["normalisation_genes"]
    )
    assert small.uns["scpermut_prepare"]["keep_genes"] == "hvg"
    np.testing.assert_array_equal(
        TrainingData.from_anndata(small).expression.toarray(), TrainingData.from_anndata(full).expression.toarray()
    )
