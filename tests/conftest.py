"""Shared fixtures: the shipped test data, and a prepared AnnData built from it once per session."""

from __future__ import annotations

import os
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Same switch as scpermut.model sets: bit-identical runs whichever test module loads TensorFlow first.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
ASSETS = REPO / "assets"
# The shipped cells have 169+ detected genes: the test QC keeps them all.
TEST_QC_MIN_GENES = 100
TEST_N_TOP_GENES = 1000


@pytest.fixture(scope="session")
def assets_dir() -> Path:
    return ASSETS


@pytest.fixture(scope="session")
def samplesheet_test() -> Path:
    return ASSETS / "samplesheet_test.csv"


@pytest.fixture(scope="session")
def qc_dir(tmp_path_factory, samplesheet_test) -> Path:
    """`scpermut qc` outputs of every sample in the test samplesheet."""
    from scpermut.data.qc import QCThresholds
    from scpermut.data.samplesheet import read_samplesheet
    from scpermut.steps.qc import run_qc

    outdir = tmp_path_factory.mktemp("qc")
    for spec in read_samplesheet(samplesheet_test):
        run_qc(spec, outdir, QCThresholds(min_genes=TEST_QC_MIN_GENES))
    return outdir


@pytest.fixture(scope="session")
def prepared_path(tmp_path_factory, qc_dir) -> Path:
    """prepared.h5ad of the test samplesheet: ctrl101/ctrl107 reference, stim101/stim107 query."""
    from scpermut.constants import PREPARED_FILE
    from scpermut.data.preprocess import PrepareSettings
    from scpermut.steps.prepare import prepare_files

    outdir = tmp_path_factory.mktemp("prepare")
    prepare_files(sorted(qc_dir.glob("*.qc.h5ad")), outdir, PrepareSettings(n_top_genes=TEST_N_TOP_GENES))
    return outdir / PREPARED_FILE


def make_counts(n_cells=60, n_genes=40, *, seed=0, prefix="cell", labels=("A", "B", "C"), batch="b1") -> ad.AnnData:
    """A small synthetic count matrix with a label and a batch column, for unit tests."""
    rng = np.random.default_rng(seed)
    counts = rng.poisson(2.0, size=(n_cells, n_genes)).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": [labels[i % len(labels)] for i in range(n_cells)], "batch": batch},
        index=[f"{prefix}{i}" for i in range(n_cells)],
    )
    var = pd.DataFrame(index=[f"G{j}" for j in range(n_genes)])
    return ad.AnnData(X=sp.csr_matrix(counts), obs=obs, var=var)


# Switches this file (or a CI runner) may set that change how TensorFlow computes. A child
# process started with ``package_only_environment()`` has none of them, so whatever keeps its
# results reproducible must come from scpermut itself.
TEST_ONLY_SWITCHES = (
    "TF_ENABLE_ONEDNN_OPTS",
    "TF_DETERMINISTIC_OPS",
    "TF_CUDNN_DETERMINISTIC",
    "TF_CPP_MIN_LOG_LEVEL",
    "TF_NUM_INTRAOP_THREADS",
    "TF_NUM_INTEROP_THREADS",
    "PYTHONHASHSEED",
    "MPLBACKEND",
)


def package_only_environment() -> dict:
    """This process's environment without ``TEST_ONLY_SWITCHES``: for subprocesses that test the package's own guarantees."""
    return {name: value for name, value in os.environ.items() if name not in TEST_ONLY_SWITCHES}
