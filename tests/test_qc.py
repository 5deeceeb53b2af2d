"""Per-sample QC: obs columns standardised, filters applied with the exact thresholds, outputs written."""

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from conftest import make_counts

from scpermut.data.qc import QCThresholds, cell_filter
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.steps.qc import qc_outputs, run_qc


def sample_with_known_metrics(tmp_path):
    """Six cells whose detected genes, counts and % mito are known exactly."""
    genes = ["MT-CO1", "MT-ND1"] + [f"G{j}" for j in range(10)]
    rows = [
        [0, 0] + [1] * 10,  # 10 genes, 10 counts, 0 % mito
        [0, 0] + [1] * 3 + [0] * 7,  # 3 genes: fails min_genes=5
        [5, 5] + [1] * 10,  # 20 counts, 50 % mito: fails max_pct_mito=20
        [1, 0] + [2] * 9 + [0],  # 10 genes, 19 counts, 5.3 % mito
        [0, 0] + [3] * 10,  # 30 counts
        [0, 0] + [1] * 6 + [0] * 4,  # 6 genes
    ]
    obs = pd.DataFrame({"cell_type": ["T", "T", "B", "B", "NK", "Unknown"], "donor": ["d1", "d1", "d2", "d2", "d2", "d1"]}, index=[f"c{i}" for i in range(6)])
    adata = make_counts(6, 12)
    adata.X = sp.csr_matrix(np.array(rows, dtype=np.float32))
    adata.var_names, adata.obs = genes, obs
    path = tmp_path / "known.h5ad"
    adata.write_h5ad(path)
    return path


def test_filters_use_the_exact_thresholds(tmp_path):
    path = sample_with_known_metrics(tmp_path)
    summary = run_qc(SampleSpec("s1", path), tmp_path / "qc", QCThresholds(min_genes=5, max_pct_mito=20, min_cells=2))
    assert summary["n_cells_before"] == 6 and summary["n_cells_after"] == 4
    assert summary["cells_removed_by"] == {"min_genes": 1, "max_genes": 0, "min_counts": 0, "max_pct_mito": 1}
    metrics = pd.read_csv(qc_outputs(tmp_path / "qc", "s1")["metrics"], sep="\t", index_col="barcode")
    assert metrics.loc["c3", "pct_counts_mt"] == pytest.approx(100 / 19, rel=1e-3)
    assert list(metrics.index[~metrics["passed_qc"]]) == ["c1", "c2"]
    # After removing c1 and c2 the mitochondrial genes are seen in one cell only: below min_cells=2.

    kept = ad.read_h5ad(qc_outputs(tmp_path / "qc", "s1")["h5ad"])
    assert list(kept.obs_names) == ["c0", "c3", "c4", "c5"]
    assert "MT-CO1" not in kept.var_names and kept.n_vars == 10


def test_cells_to_annotate_that_fail_qc_are_kept_and_flagged(tmp_path, caplog):
    path = sample_with_known_metrics(tmp_path)
    thresholds = QCThresholds(min_genes=7, max_pct_mito=20, min_cells=2)
    # c5 (6 genes, label Unknown) is a cell to annotate: kept, flagged, counted, warned about.
    summary = run_qc(SampleSpec("s1", path), tmp_path / "qc", thresholds)
    kept = ad.read_h5ad(qc_outputs(tmp_path / "qc", "s1")["h5ad"])
    assert list(kept.obs_names) == ["c0", "c3", "c4", "c5"]
    assert list(kept.obs["scpermut_qc_pass"]) == [True, True, True, False]
    assert summary["n_cells_flagged"] == 1 and summary["n_cells_failed_qc"] == 3
    assert "1 of the 1 cells to annotate in sample 's1' fail QC (1 below min_genes 7)" in caplog.text
    # A query sample keeps every cell and every gene (gene filters apply to the reference only).
    summary = run_qc(SampleSpec("q1", path, role="query"), tmp_path / "qc", thresholds)
    query = ad.read_h5ad(qc_outputs(tmp_path / "qc", "q1")["h5ad"])
    assert query.n_obs == 6 and query.n_vars == 12
    assert int((~query.obs["scpermut_qc_pass"]).sum()) == 3 == summary["n_cells_flagged"]


def test_max_genes_and_min_counts():
    metrics = pd.DataFrame({"n_genes_by_counts": [5, 50, 500], "total_counts": [10, 100, 1000], "pct_counts_mt": [0, 0, 0]})
    keep = cell_filter(metrics, QCThresholds(min_genes=0, max_genes=100, min_counts=50, max_pct_mito=100))
    assert list(keep) == [False, True, False]


def test_obs_is_standardised(tmp_path):
    path = sample_with_known_metrics(tmp_path)
    spec = SampleSpec("s1", path, role="reference", batch_col="donor", label_col="cell_type")
    run_qc(spec, tmp_path, QCThresholds(min_genes=0, max_pct_mito=100, min_cells=0), Keys(class_key="label", batch_key="batch"))

    adata = ad.read_h5ad(tmp_path / "s1.qc.h5ad")
    assert list(adata.obs["batch"]) == ["d1", "d1", "d2", "d2", "d2", "d1"]
    assert list(adata.obs["label"]) == ["T", "T", "B", "B", "NK", "Unknown"]
    assert set(adata.obs["scpermut_sample"]) == {"s1"} and set(adata.obs["scpermut_role"]) == {"reference"}
    assert adata.uns["scpermut_qc"]["n_labelled"] == 5


def test_sample_id_is_the_batch_and_custom_unknown_label(tmp_path):
    path = sample_with_known_metrics(tmp_path)
    spec = SampleSpec("s9", path, unknown_label="NK")
    summary = run_qc(spec, tmp_path, QCThresholds(min_genes=0, max_pct_mito=100, min_cells=0))

    adata = ad.read_h5ad(tmp_path / "s9.qc.h5ad")
    assert set(adata.obs["batch"]) == {"s9"}
    # Both the file's own unknown label and the global one mark unlabelled cells.
    assert (adata.obs["cell_type"] == "Unknown").sum() == 2
    assert summary["n_labelled"] == 4


def test_the_condition_comes_from_the_samplesheet_or_the_files_column(tmp_path):
    path = sample_with_known_metrics(tmp_path)
    open_qc = QCThresholds(min_genes=0, max_pct_mito=100, min_cells=0)
    run_qc(SampleSpec("s1", path, condition="stimulated"), tmp_path, open_qc, Keys(condition_key="treatment"))
    assert set(ad.read_h5ad(tmp_path / "s1.qc.h5ad").obs["treatment"]) == {"stimulated"}
    with pytest.raises(InputError, match="condition column 'treatment' does not exist in obs"):
        run_qc(SampleSpec("s2", path), tmp_path, open_qc, Keys(condition_key="treatment"))
    with pytest.raises(InputError, match="gives sample 's3' a condition; name its obs column with `condition_key`"):
        run_qc(SampleSpec("s3", path, condition="control"), tmp_path, open_qc)
    assert Keys.from_record(Keys(condition_key=None).to_dict()).condition_key is None


def test_query_without_labels_is_unlabelled(tmp_path):
    adata = make_counts()
    del adata.obs["cell_type"]
    adata.write_h5ad(tmp_path / "q.h5ad")
    run_qc(SampleSpec("q", tmp_path / "q.h5ad", role="query"), tmp_path, QCThresholds(min_genes=0, min_cells=0))

    assert set(ad.read_h5ad(tmp_path / "q.qc.h5ad").obs["cell_type"]) == {"Unknown"}


@pytest.mark.parametrize(
    ("spec_kwargs", "message"),
    [
        ({"batch_col": "lab"}, "batch column 'lab' does not exist in obs"),
        ({"label_col": "celltype"}, "label column 'celltype' does not exist in obs"),
    ],
)
def test_absent_columns_are_named(tmp_path, spec_kwargs, message):
    make_counts().write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match=message):
        run_qc(SampleSpec("a", tmp_path / "a.h5ad", **spec_kwargs), tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_absent_class_key_in_reference_is_named(tmp_path):
    make_counts().write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match="label column 'celltype' does not exist"):
        run_qc(SampleSpec("a", tmp_path / "a.h5ad"), tmp_path / "out", keys=Keys(class_key="celltype"))


def test_no_cell_passing_stops_in_the_input_checks_before_any_write(tmp_path):
    # The error comes before any output is opened; a failure *during* a write is tested in test_atomic.py.
    make_counts().write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match="no cell of sample 'a' passes QC"):
        run_qc(SampleSpec("a", tmp_path / "a.h5ad"), tmp_path / "out", QCThresholds(min_genes=10_000))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_duplicate_barcodes_within_a_sample_are_made_unique(tmp_path):
    adata = make_counts(n_cells=4)
    adata.obs_names = ["x", "x", "y", "y"]
    adata.write_h5ad(tmp_path / "a.h5ad")
    run_qc(SampleSpec("a", tmp_path / "a.h5ad"), tmp_path, QCThresholds(min_genes=0, min_cells=0))

    assert ad.read_h5ad(tmp_path / "a.qc.h5ad").obs_names.is_unique


def test_shipped_sample_outputs(qc_dir):
    outputs = qc_outputs(qc_dir, "ctrl101")
    assert all(path.is_file() and path.stat().st_size > 0 for path in outputs.values())
    assert outputs["violin"].read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(outputs["summary"].read_text())
    assert summary["n_cells_before"] == 454 and summary["n_cells_after"] == 454
    assert summary["n_genes_after"] < summary["n_genes_before"] == 1267
    assert summary["thresholds"]["min_genes"] == 100


def test_missing_batch_values_are_refused(tmp_path):
    adata = make_counts()
    adata.obs["donor"] = ["d1"] * (adata.n_obs - 2) + [None, None]
    adata.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match="batch column 'donor' is empty for 2 cells"):
        run_qc(SampleSpec("a", tmp_path / "a.h5ad", batch_col="donor"), tmp_path / "out")
