"""SYNTHETIC cells for the cost measures: real cells resampled with count noise.

Source: ``cellbench_mixology_5batch`` (5 batches, 5 cell lines) on its 2,000 batch-aware highly
variable genes. Each synthetic cell copies a real cell drawn with replacement (seeded) and
redraws every count as ``Poisson(0.2 * s * count)``, with ``s`` a log-normal library-size
jitter per cell (sd 0.3). The factor 0.2 thins this plate-based data (median ~3,000 counts
per cell on these genes) to droplet-like depth: about 18 % of entries are non-zero.
These cells are for measuring time and memory only, never accuracy.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEPTH = 0.2
JITTER_SD = 0.3
N_GENES = 2000
LABELLED_SHARE = 0.8  # the rest are unlabelled reference cells
VALIDATION_SHARE = 0.2  # of the labelled cells, as `scpermut prepare` holds out by default


def source():
    """Raw counts of the source cells on 2,000 HVGs, with their cell line and batch."""
    import scanpy as sc
    from common import BATCH, TRUTH
    from tasks import DATASETS

    adata = DATASETS["mixology_5batch"].load()
    normalised = adata.copy()
    sc.pp.normalize_total(normalised, target_sum=1e4)
    sc.pp.log1p(normalised)
    sc.pp.highly_variable_genes(normalised, n_top_genes=N_GENES, flavor="seurat", batch_key=BATCH)
    adata = adata[:, normalised.var["highly_variable"].to_numpy()].copy()
    return adata.X.tocsr(), adata.obs[TRUTH].to_numpy(), adata.obs[BATCH].to_numpy(), adata.var_names.to_numpy()


def blocks(n_cells: int, seed: int = 0, chunk: int = 100_000):
    """The gene names, and ``n_cells`` synthetic raw-count rows drawn ``chunk`` at a time: an iterator
    of (CSR float32 block, labels, batches). The same seed gives the same cells whatever ``chunk``."""
    matrix, truth, batches, genes = source()
    rng = np.random.default_rng(seed)
    rows = rng.integers(0, matrix.shape[0], size=n_cells)

    def draw():
        for start in range(0, n_cells, chunk):
            block = matrix[rows[start : start + chunk]].tocsr()
            scale = DEPTH * rng.lognormal(0.0, JITTER_SD, size=block.shape[0]).astype(np.float32)
            per_entry = np.repeat(scale, np.diff(block.indptr))
            block.data = rng.poisson(block.data * per_entry).astype(np.float32)
            block.eliminate_zeros()
            yield block, truth[rows[start : start + chunk]], batches[rows[start : start + chunk]]

    return genes, draw()


def counts(n_cells: int, seed: int = 0, chunk: int = 100_000):
    """``n_cells`` synthetic raw-count rows (CSR float32), their labels, batches and gene names."""
    genes, drawn = blocks(n_cells, seed, chunk)
    parts = list(drawn)
    matrix = sp.vstack([block for block, _, _ in parts], format="csr", dtype=np.float32)
    return matrix, np.concatenate([t for _, t, _ in parts]), np.concatenate([b for _, _, b in parts]), genes


def prepared(n_cells: int, seed: int = 0, with_counts: bool = True):
    """A ``scpermut prepare``-shaped AnnData of synthetic cells (every gene highly variable).

    With ``with_counts`` the raw counts stay in ``layers["counts"]`` as in a real
    ``prepared.h5ad``, so memory is what ``scpermut train`` would hold.
    """
    import anndata as ad
    import pandas as pd

    from scpermut import constants
    from scpermut.keys import Keys

    keys = Keys()

    matrix, truth, batches, genes = counts(n_cells, seed)
    rng = np.random.default_rng(seed + 1)
    draw = rng.random(n_cells)
    split = np.where(draw < LABELLED_SHARE * (1 - VALIDATION_SHARE), constants.SPLIT_TRAIN, np.where(draw < LABELLED_SHARE, constants.SPLIT_VALIDATION, constants.SPLIT_UNLABELLED))
    labels = np.where(split == constants.SPLIT_UNLABELLED, keys.unlabeled_category, truth)
    expression = matrix.copy()
    totals = np.asarray(expression.sum(axis=1)).ravel()
    expression.data *= np.repeat(1e4 / np.maximum(totals, 1), np.diff(expression.indptr)).astype(np.float32)
    np.log1p(expression.data, out=expression.data)
    obs = pd.DataFrame(
        {
            keys.class_key: pd.Categorical(labels),
            keys.batch_key: pd.Categorical(batches),
            constants.SPLIT: pd.Categorical(split, categories=list(constants.SPLITS)),
            "synthetic": True,
        },
        index=[f"synthetic_{i}" for i in range(n_cells)],
    )
    adata = ad.AnnData(X=expression, obs=obs, var=pd.DataFrame({"highly_variable": True}, index=genes))
    if with_counts:
        adata.layers[constants.COUNTS_LAYER] = matrix
    else:
        del matrix
    adata.uns[constants.PREPARE_UNS] = {
        **keys.to_dict(),
        "target_sum": 1e4,
        "n_top_genes": N_GENES,
        "synthetic": "mixology_5batch resampled, Poisson(0.2 * s * count)",
    }
    return adata


def raw_with_labels(n_cells: int, seed: int = 0):
    """Synthetic raw counts with a label column (``Unknown`` for unlabelled cells), for scMusketeers."""
    import anndata as ad
    import pandas as pd
    from common import BATCH, LABEL, UNKNOWN

    matrix, truth, batches, genes = counts(n_cells, seed)
    draw = np.random.default_rng(seed + 1).random(n_cells)
    labels = np.where(draw < LABELLED_SHARE, truth, UNKNOWN)
    obs = pd.DataFrame({LABEL: labels, BATCH: batches}, index=[f"synthetic_{i}" for i in range(n_cells)])
    return ad.AnnData(X=matrix, obs=obs, var=pd.DataFrame(index=genes))
