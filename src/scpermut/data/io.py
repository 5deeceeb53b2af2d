"""Readers: raw counts from .h5ad (X, a layer or .raw) and 10x Genomics .h5 files."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

from scpermut import constants
from scpermut.constants import COUNTS_LAYER
from scpermut.errors import InputError

log = logging.getLogger(__name__)

# Stored values checked to tell counts from normalised data: a stride over the whole matrix, so
# a later batch (or file appended to an atlas) that was normalised is seen without reading every value.
_VALUES_CHECKED = 2_000_000


def count_problem(matrix) -> str | None:
    """Say why ``matrix`` does not hold raw counts (NaN, negatives, non-integers), or None if it does.

    Every stored value is checked for NaN and infinities (in chunks); signs and fractions on a
    strided sample of at most ``_VALUES_CHECKED`` values spread over every row. The message
    names the first offending row.
    """
    values = matrix.data if sp.issparse(matrix) else np.asarray(matrix).ravel()
    if values.size == 0:
        return None
    for start in range(0, values.size, _VALUES_CHECKED):
        if not np.isfinite(chunk := values[start:start + _VALUES_CHECKED]).all():
            n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
            found = [f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else ""]
            first = start + int(np.flatnonzero(~np.isfinite(chunk))[0])
            plural = "s" if n_nan + n_inf > 1 else ""
            return " and ".join(part for part in found if part) + f" value{plural}" + _row_of(matrix, first)
    stride = max(1, -(-values.size // _VALUES_CHECKED))
    sample = np.asarray(values[::stride])
    for problem, bad in (("negative values", sample < 0), ("non-integer values", np.mod(sample, 1) != 0)):
        if bad.any():
            return problem + _row_of(matrix, int(np.flatnonzero(bad)[0]) * stride)
    return None


def _row_of(matrix, position: int) -> str:
    """`` (the first in cell row i of n)``: the row of the stored value at ``position``, to point at a batch."""
    if sp.issparse(matrix):
        if matrix.format != "csr":
            return ""
        row = int(np.searchsorted(matrix.indptr, position, side="right")) - 1
    else:
        row = position // max(1, matrix.shape[1])
    return f" (the first in cell row {row + 1:,} of {matrix.shape[0]:,})"


def _as_counts(matrix) -> sp.csr_matrix:
    return sp.csr_matrix(matrix, dtype=np.float32)


def _counts_from_h5ad(adata: ad.AnnData, path: Path, layer: str | None) -> ad.AnnData:
    """Return a new AnnData whose X holds the raw counts found in ``adata``."""
    if layer == "raw":
        if adata.raw is None:
            raise InputError(f"{path}: --layer raw was asked for but the file has no .raw.")
        counts = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var)
    elif layer is not None:
        if layer not in adata.layers:
            available = ", ".join(adata.layers.keys()) or "none"
            raise InputError(f"{path}: layer '{layer}' does not exist (layers: {available}).")
        counts = ad.AnnData(X=adata.layers[layer], obs=adata.obs, var=adata.var)
    else:
        problem = count_problem(adata.X)
        if problem is None:
            counts = ad.AnnData(X=adata.X, obs=adata.obs, var=adata.var)
        elif COUNTS_LAYER in adata.layers and count_problem(adata.layers[COUNTS_LAYER]) is None:
            log.info("%s: X has %s; using layers['%s'] as raw counts", path, problem, COUNTS_LAYER)
            counts = ad.AnnData(X=adata.layers[COUNTS_LAYER], obs=adata.obs, var=adata.var)
        elif adata.raw is not None and count_problem(adata.raw.X) is None:
            log.info("%s: X has %s; using .raw as raw counts", path, problem)
            counts = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var)
        else:
            raise InputError(
                f"{path}: X holds {problem}, so it is not raw counts, and neither layers['{COUNTS_LAYER}'] "
                "nor .raw holds counts; point --layer at the raw counts (in a samplesheet: its column 'layer')."
            )
        layer = None
    if layer is not None and (problem := count_problem(counts.X)) is not None:
        raise InputError(f"{path}: layer '{layer}' holds {problem}, so it is not raw counts.")
    counts.X = _as_counts(counts.X)
    return counts


def read_h5ad(path: str | Path, what: str = "file", backed: str | None = None) -> ad.AnnData:
    """``anndata.read_h5ad`` whose failures are one sentence naming the file.

    ``what`` names the expected file in the not-found message (e.g. "annotated h5ad").
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: {what} not found.")
    try:
        return ad.read_h5ad(path, backed=backed)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot be read as .h5ad ({error}).") from error


def read_counts(path: str | Path, layer: str | None = None) -> ad.AnnData:
    """Read raw counts from an .h5ad or 10x .h5 file.

    Parameters
    ----------
    path
        ``.h5ad`` file (counts in ``X``, ``layers[layer]``, ``layers["counts"]`` or ``.raw``)
        or a 10x Genomics ``.h5`` matrix.
    layer
        Where the counts are in an ``.h5ad``: a layer name, ``"raw"`` for ``.raw``, or None to
        use ``X`` when it holds counts and fall back to ``layers["counts"]`` then ``.raw``.

    Returns
    -------
    AnnData with raw counts in ``X`` (CSR, float32), unique gene names and the file's ``obs``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    suffix = path.suffix.lower()
    try:
        if suffix == ".h5ad":
            adata = _counts_from_h5ad(ad.read_h5ad(path), path, layer)
        elif suffix == ".h5":
            import scanpy as sc

            adata = sc.read_10x_h5(path)
            adata.X = _as_counts(adata.X)
        else:
            raise InputError(f"{path}: unsupported file type '{path.suffix}'; give an .h5ad or a 10x .h5 file.")
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot be read as {suffix} ({error}).") from error
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(f"{path}: the file is empty ({adata.n_obs} cells x {adata.n_vars} genes).")
    if not adata.var_names.is_unique:
        log.warning("%s: %d duplicated gene names made unique", path, adata.var_names.duplicated().sum())
        adata.var_names_make_unique()
    adata.obs_names = adata.obs_names.astype(str)
    return adata


def read_training_cells(path: str | Path, with_counts: bool = False) -> ad.AnnData:
    """The cells of a ``prepared.h5ad`` that may train a model: X, obs, var and uns.

    Cells to annotate that failed QC (``obs["scpermut_qc_pass"]`` False) are left out: they are
    annotated, never trained on. The counts layer is read only when asked (the MSE loss never
    reads it, and it is as large as X). Every fault is an ``InputError`` naming the file.
    """
    import h5py
    from anndata.io import read_elem

    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    try:
        with h5py.File(path, "r") as handle:
            parts = {name: read_elem(handle[name]) for name in ("X", "obs", "var", "uns") if name in handle}
            layers = {}
            if with_counts and COUNTS_LAYER in handle.get("layers", {}):
                layers[COUNTS_LAYER] = read_elem(handle["layers"][COUNTS_LAYER])
        adata = ad.AnnData(**parts, layers=layers)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot be read as .h5ad ({error}).") from error
    if constants.PREPARE_UNS not in adata.uns:
        raise InputError(f"{path}: no uns['{constants.PREPARE_UNS}'] record; run `scpermut prepare` first.")
    if constants.QC_PASS in adata.obs and not adata.obs[constants.QC_PASS].all():
        passed = adata.obs[constants.QC_PASS].to_numpy(bool)
        log.info("%s: training leaves out %d cells that failed QC", path, int((~passed).sum()))
        adata = adata[passed].copy()
    return adata
