"""Bad input is named for what it is, with advice that uses the command's own flags."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from conftest import make_counts

from scpermut.annotation import align_genes
from scpermut.cli import main
from scpermut.data.io import count_problem, read_counts
from scpermut.data.qc import QCThresholds
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.steps.qc import run_qc


def invoke(*args):
    return CliRunner().invoke(main, [str(arg) for arg in args], catch_exceptions=False)


def test_nan_and_infinite_values_are_named_as_such_without_a_numpy_warning(tmp_path):
    adata = make_counts()
    adata.X = adata.X.toarray()
    adata.X[0, 0], adata.X[1, 1], adata.X[2, 2] = np.nan, np.nan, np.inf
    adata.X = sp.csr_matrix(adata.X)
    assert count_problem(adata.X).startswith("2 NaN and 1 infinite values (the first in cell row 1 ")
    adata.write_h5ad(tmp_path / "nan.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        with pytest.raises(InputError, match="X holds 2 NaN and 1 infinite values.*point --layer"):
            read_counts(tmp_path / "nan.h5ad")


def test_a_label_that_looks_unlabelled_is_warned_about(tmp_path, caplog):
    adata = make_counts(labels=("A", "B", "unassigned"))
    adata.write_h5ad(tmp_path / "s.h5ad")
    with caplog.at_level(logging.WARNING):
        run_qc(SampleSpec("s", tmp_path / "s.h5ad"), tmp_path / "qc", QCThresholds(min_genes=0, min_cells=0))
    assert "20 cells have the label 'unassigned'" in caplog.text
    assert "--unlabeled_category 'unassigned'" in caplog.text


def test_label_with_nothing_to_annotate_is_an_error(tmp_path):
    adata = make_counts(labels=("A", "B", "unassigned"))
    adata.write_h5ad(tmp_path / "atlas.h5ad")
    result = invoke("label", tmp_path / "atlas.h5ad", "--outdir", tmp_path / "out")
    assert result.exit_code == 1
    assert "nothing to annotate" in result.output
    assert "20 cells are labelled 'unassigned'" in result.output and "--unlabeled_category unassigned" in result.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("max_missing_genes", [0.5, 1.0])
def test_no_shared_gene_is_an_error_whatever_max_missing_genes_says(max_missing_genes):
    matrix = sp.csr_matrix(np.ones((3, 2), dtype=np.float32))
    with pytest.raises(InputError, match="none of the model's 3 genes is in the data"):
        align_genes(matrix, ["X1", "X2"], ["G1", "G2", "G3"], max_missing_genes=max_missing_genes)


def test_label_advises_its_own_layer_flag_for_normalised_data(tmp_path):
    adata = make_counts()
    adata.X = sp.csr_matrix(np.log1p(adata.X.toarray()) + 0.5)
    adata.obs["cell_type"] = ["A", "Unknown"] * 30
    adata.write_h5ad(tmp_path / "atlas.h5ad")
    result = invoke("label", tmp_path / "atlas.h5ad", "--outdir", tmp_path / "out")
    assert result.exit_code == 1
    assert "point --layer at the raw counts" in result.output
    assert "--layer" in invoke("label", "--help").output
    assert "Traceback" not in result.output


def test_a_file_system_fault_is_one_sentence_not_a_traceback(tmp_path, monkeypatch):
    import scpermut.steps.qc as qc_step

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", str(tmp_path / "out" / "x.h5ad"))

    monkeypatch.setattr(qc_step, "run_qc", full_disk)
    import scpermut.steps.run as run_step

    monkeypatch.setattr(run_step, "run_qc", full_disk)
    adata = make_counts(labels=("A", "Unknown"))
    adata.write_h5ad(tmp_path / "atlas.h5ad")
    result = invoke("label", tmp_path / "atlas.h5ad", "--outdir", tmp_path / "out")
    assert result.exit_code == 1
    assert "x.h5ad: No space left on device; check the path" in result.output
    assert "Traceback" not in result.output
