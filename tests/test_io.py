"""Readers: raw counts from X, a layer, .raw or a 10x .h5 file, and clear errors otherwise."""

import h5py
import numpy as np
import pytest
import scipy.sparse as sp
from conftest import make_counts

from scpermut import constants
from scpermut.data import io
from scpermut.data.io import count_problem, read_counts, read_rows_and_columns, read_training_cells
from scpermut.errors import InputError


def normalised(adata):
    """A copy whose X is log-normalised, as many published atlases ship it."""
    out = adata.copy()
    totals = np.asarray(out.X.sum(axis=1)).ravel()
    out.X = sp.csr_matrix(np.log1p(out.X.toarray() / totals[:, None] * 1e4))
    return out


def write_10x_h5(path, adata):
    """Write the Cell Ranger v3 HDF5 layout (genes x cells CSC, i.e. cells x genes CSR)."""
    matrix = sp.csr_matrix(adata.X)
    with h5py.File(path, "w") as handle:
        group = handle.create_group("matrix")
        group["barcodes"] = np.array(adata.obs_names, dtype="S")
        group["data"] = matrix.data.astype(np.int32)
        group["indices"] = matrix.indices
        group["indptr"] = matrix.indptr
        group["shape"] = np.array([adata.n_vars, adata.n_obs])
        features = group.create_group("features")
        features["id"] = np.array([f"ENSG{j:05d}" for j in range(adata.n_vars)], dtype="S")
        features["name"] = np.array(adata.var_names, dtype="S")
        features["feature_type"] = np.array(["Gene Expression"] * adata.n_vars, dtype="S")
        features["genome"] = np.array(["GRCh38"] * adata.n_vars, dtype="S")


def test_counts_in_x_are_read_as_sparse_float32(tmp_path):
    source = make_counts()
    source.write_h5ad(tmp_path / "a.h5ad")
    adata = read_counts(tmp_path / "a.h5ad")
    assert sp.issparse(adata.X) and adata.X.dtype == np.float32
    np.testing.assert_array_equal(adata.X.toarray(), source.X.toarray())
    assert list(adata.obs["cell_type"]) == list(source.obs["cell_type"])


def test_normalised_x_falls_back_to_counts_layer(tmp_path):
    source = make_counts()
    stored = normalised(source)
    stored.layers["counts"] = source.X
    stored.write_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(read_counts(tmp_path / "a.h5ad").X.toarray(), source.X.toarray())


def test_normalised_x_falls_back_to_raw(tmp_path):
    source = make_counts()
    stored = normalised(source)
    stored.raw = source
    stored.write_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(read_counts(tmp_path / "a.h5ad").X.toarray(), source.X.toarray())


def test_named_layer_is_used(tmp_path):
    source = make_counts()
    stored = normalised(source)
    stored.layers["umi"] = source.X
    stored.write_h5ad(tmp_path / "a.h5ad")
    np.testing.assert_array_equal(read_counts(tmp_path / "a.h5ad", layer="umi").X.toarray(), source.X.toarray())


def test_normalised_x_without_counts_is_refused_by_name(tmp_path):
    normalised(make_counts()).write_h5ad(tmp_path / "norm.h5ad")
    with pytest.raises(InputError, match=r"norm\.h5ad: X holds non-integer values"):
        read_counts(tmp_path / "norm.h5ad")


def test_missing_or_normalised_layer_is_refused(tmp_path):
    stored = make_counts()
    stored.layers["lognorm"] = normalised(stored).X
    stored.write_h5ad(tmp_path / "a.h5ad")
    with pytest.raises(InputError, match="layer 'spliced' does not exist"):
        read_counts(tmp_path / "a.h5ad", layer="spliced")
    with pytest.raises(InputError, match="layer 'lognorm' holds non-integer values"):
        read_counts(tmp_path / "a.h5ad", layer="lognorm")
    with pytest.raises(InputError, match="has no .raw"):
        read_counts(tmp_path / "a.h5ad", layer="raw")


def test_count_problem_names_negatives_and_fractions():
    assert count_problem(sp.csr_matrix(np.array([[1.0, 2.0]]))) is None
    assert count_problem(np.array([[1.0, -2.0]])).startswith("negative values")
    assert count_problem(np.array([[1.5, 2.0]])).startswith("non-integer values")


def test_count_check_sees_a_normalised_batch_at_the_end_of_a_large_matrix():
    """An atlas whose last batch was log-normalised: the check reaches it and names its first row."""
    rng = np.random.default_rng(0)
    counts = sp.random(6000, 1000, density=0.5, format="csr", random_state=rng)
    counts.data = np.ceil(counts.data * 10)  # 3 million stored integers: more than one sample's worth
    assert count_problem(counts) is None
    rows = counts.toarray()
    rows[5500:] = np.log1p(rows[5500:])
    problem = count_problem(sp.csr_matrix(rows))
    assert problem is not None and problem.startswith("non-integer values")
    first_row = int(problem.split("cell row ")[1].split(" ")[0].replace(",", ""))
    assert 5500 < first_row <= 5600


def test_10x_h5_is_read(tmp_path):
    source = make_counts(n_cells=12, n_genes=9)
    write_10x_h5(tmp_path / "filtered_feature_bc_matrix.h5", source)
    adata = read_counts(tmp_path / "filtered_feature_bc_matrix.h5")
    assert adata.shape == (12, 9)
    assert list(adata.var_names) == list(source.var_names)
    np.testing.assert_array_equal(adata.X.toarray(), source.X.toarray())


def test_missing_unsupported_and_empty_files_are_refused(tmp_path):
    with pytest.raises(InputError, match=r"nowhere\.h5ad: file not found"):
        read_counts(tmp_path / "nowhere.h5ad")
    (tmp_path / "table.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="unsupported file type '.csv'"):
        read_counts(tmp_path / "table.csv")
    make_counts()[:0].copy().write_h5ad(tmp_path / "empty.h5ad")
    with pytest.raises(InputError, match=r"empty\.h5ad: the file is empty \(0 cells"):
        read_counts(tmp_path / "empty.h5ad")
    (tmp_path / "broken.h5ad").write_text("not hdf5")
    with pytest.raises(InputError, match=r"broken\.h5ad: cannot be read"):
        read_counts(tmp_path / "broken.h5ad")


def test_duplicate_gene_names_are_made_unique(tmp_path):
    source = make_counts(n_genes=4)
    source.var_names = ["G0", "G1", "G1", "G3"]
    source.write_h5ad(tmp_path / "a.h5ad")
    assert read_counts(tmp_path / "a.h5ad").var_names.is_unique


def test_shipped_test_data_holds_counts(assets_dir):
    adata = read_counts(assets_dir / "test_data" / "kang_ctrl101.h5ad")
    assert adata.shape == (454, 1267)
    assert set(adata.obs["cell_type"].unique()) >= {"B cells", "CD4 T cells"}


@pytest.mark.parametrize("all_rows, all_columns", [(False, False), (False, True), (True, False)])
def test_stored_rows_and_columns_are_read_block_by_block_exactly(tmp_path, monkeypatch, all_rows, all_columns):
    import anndata as ad

    matrix = sp.random(300, 40, density=0.3, format="csr", dtype=np.float32, random_state=0)
    ad.AnnData(X=matrix, layers={"dense": matrix.toarray()}).write_h5ad(tmp_path / "m.h5ad")
    monkeypatch.setattr(io, "_ROWS_PER_BLOCK", 32)  # many blocks, the last one short
    rng = np.random.default_rng(1)
    rows = np.ones(300, bool) if all_rows else rng.random(300) < 0.6
    columns = np.ones(40, bool) if all_columns else rng.random(40) < 0.4
    expected = matrix[np.flatnonzero(rows)][:, columns]
    with h5py.File(tmp_path / "m.h5ad", "r") as handle:
        for element in (handle["X"], handle["layers"]["dense"]):
            read = read_rows_and_columns(element, rows, columns)
            assert read.dtype == np.float32 and read.shape == expected.shape
            assert (read != expected).nnz == 0


def test_training_reads_only_the_model_genes_of_the_cells_that_passed_qc(tmp_path):
    source = make_counts()
    source.var["highly_variable"] = np.arange(source.n_vars) % 3 == 0
    source.obs[constants.QC_PASS] = np.arange(source.n_obs) % 4 != 0
    source.layers[constants.COUNTS_LAYER] = source.X.copy()
    source.uns[constants.PREPARE_UNS] = {"target_sum": 1e4}
    source.write_h5ad(tmp_path / "prepared.h5ad")
    expected = source[source.obs[constants.QC_PASS].to_numpy(), source.var["highly_variable"].to_numpy()]
    for with_counts in (False, True):
        read = read_training_cells(tmp_path / "prepared.h5ad", with_counts=with_counts)
        assert list(read.var_names) == list(expected.var_names)
        assert list(read.obs_names) == list(expected.obs_names)
        assert (read.X != sp.csr_matrix(expected.X)).nnz == 0
        assert (constants.COUNTS_LAYER in read.layers) == with_counts
