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
# Rows of a stored matrix read at a time: a few million values, whatever the atlas size.
_ROWS_PER_BLOCK = 8192


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
        counts = detected_counts(adata, path)
        if counts is None:
            raise InputError(
                f"{path}: X holds {count_problem(adata.X)}, so it is not raw counts, and neither layers['{COUNTS_LAYER}'] "
                "nor .raw holds counts; point --layer at the raw counts (in a samplesheet: its column 'layer')."
            )
        layer = None
    if layer is not None and (problem := count_problem(counts.X)) is not None:
        raise InputError(f"{path}: layer '{layer}' holds {problem}, so it is not raw counts.")
    counts.X = _as_counts(counts.X)
    return counts


def detected_counts(adata: ad.AnnData, source) -> ad.AnnData | None:
    """The raw counts of ``adata`` (its ``obs``, the counts' genes): ``X`` when it holds counts, else
    ``layers["counts"]``, else ``.raw``; None when none of them does. ``source`` names it in the log."""
    problem = count_problem(adata.X)
    if problem is None:
        return ad.AnnData(X=adata.X, obs=adata.obs, var=adata.var)
    if COUNTS_LAYER in adata.layers and count_problem(adata.layers[COUNTS_LAYER]) is None:
        log.info("%s: X has %s; using layers['%s'] as raw counts", source, problem, COUNTS_LAYER)
        return ad.AnnData(X=adata.layers[COUNTS_LAYER], obs=adata.obs, var=adata.var)
    if adata.raw is not None and count_problem(adata.raw.X) is None:
        log.info("%s: X has %s; using .raw as raw counts", source, problem)
        return ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var)
    return None


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
    """The cells of a ``prepared.h5ad`` that may train a model, on the model's genes only.

    ``X`` (and the counts layer, read only when asked: the MSE loss never reads it) is read in
    blocks of rows keeping only the highly variable genes and the cells that passed QC, so the
    process never holds more of the matrix than training uses. Cells to annotate that failed QC
    (``obs["scpermut_qc_pass"]`` False) are left out: they are annotated, never trained on.
    Every fault is an ``InputError`` naming the file.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(_existing(path), "r") as handle:
            obs, var, uns, passed, genes = _training_tables(handle, path)
            layers = {}
            if with_counts and COUNTS_LAYER in handle.get("layers", {}):
                layers[COUNTS_LAYER] = read_rows_and_columns(handle["layers"][COUNTS_LAYER], passed, genes)
            matrix = read_rows_and_columns(handle["X"], passed, genes)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot be read as .h5ad ({error}).") from error
    _check_prepared(uns, path)
    return ad.AnnData(X=matrix, obs=obs[passed], var=var[genes], uns=uns, layers=layers)


def open_training_cells(path: str | Path, with_counts: bool = False):
    """What :func:`read_training_cells` reads, with the matrices left on disk.

    Returns ``(obs, var, uns, X, counts)``: the tables of the cells that passed QC and of the
    model's genes, and :class:`~scpermut.data.stored.StoredRows` over ``X`` and (when asked and
    stored) the counts layer, which read rows from the file as training asks for them.
    """
    import h5py

    from scpermut.data.stored import StoredRows

    path = Path(path)
    try:
        with h5py.File(_existing(path), "r") as handle:
            obs, var, uns, passed, genes = _training_tables(handle, path)
            has_counts = COUNTS_LAYER in handle.get("layers", {})
        _check_prepared(uns, path)
        expression = StoredRows(path, "X", passed, genes)
        counts = StoredRows(path, f"layers/{COUNTS_LAYER}", passed, genes) if with_counts and has_counts else None
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{path}: cannot be read as .h5ad ({error}).") from error
    return obs[passed], var[genes], uns, expression, counts


def _existing(path: Path) -> Path:
    if not path.is_file():
        raise InputError(f"{path}: file not found.")
    return path


def _training_tables(handle, path: Path):
    """``obs``, ``var``, ``uns`` of an open prepared h5ad, the cells that passed QC and the model's genes."""
    from anndata.io import read_elem

    obs, var = read_elem(handle["obs"]), read_elem(handle["var"])
    uns = read_elem(handle["uns"]) if "uns" in handle else {}
    # Without the HVG flags every gene is read; training then says what is missing.
    genes = var["highly_variable"].to_numpy(bool) if "highly_variable" in var else np.ones(len(var), bool)
    passed = obs[constants.QC_PASS].to_numpy(bool) if constants.QC_PASS in obs else np.ones(len(obs), bool)
    if not passed.all():
        log.info("%s: training leaves out %d cells that failed QC", path, int((~passed).sum()))
    return obs, var, uns, passed, genes


def _check_prepared(uns: dict, path: Path) -> None:
    if constants.PREPARE_UNS not in uns:
        raise InputError(f"{path}: no uns['{constants.PREPARE_UNS}'] record; run `scpermut prepare` first.")


def read_rows_and_columns(element, rows: np.ndarray, columns: np.ndarray) -> sp.csr_matrix:
    """The ``rows`` x ``columns`` (boolean masks) of a matrix stored in an h5ad, as float32 CSR.

    A CSR matrix (what ``prepare`` writes) is read in blocks of rows, twice when some columns are
    dropped (first the column indices, to size the result, then the values): only the kept
    values are ever held, once. Other encodings are read whole, then subset.
    """
    from anndata.io import read_elem

    if dict(element.attrs).get("encoding-type") != "csr_matrix":
        return sp.csr_matrix(read_elem(element)[np.flatnonzero(rows)][:, columns], dtype=np.float32)
    indptr = element["indptr"][:].astype(np.int64)
    column_codes = np.where(columns, np.cumsum(columns) - 1, -1)
    blocks = [slice(start, min(start + _ROWS_PER_BLOCK, rows.size)) for start in range(0, rows.size, _ROWS_PER_BLOCK)]
    kept = np.diff(indptr)
    if not columns.all():
        kept = np.concatenate([_kept_per_row(element, indptr, block, column_codes) for block in blocks] or [kept])
    kept = kept[rows]
    out_indptr = np.concatenate([[0], np.cumsum(kept)])
    index_dtype = np.int32 if out_indptr[-1] < 2**31 else np.int64
    data = np.empty(out_indptr[-1], np.float32)
    indices = np.empty(out_indptr[-1], index_dtype)
    cursor = 0
    for block in blocks:
        low, high = indptr[block.start], indptr[block.stop]
        codes = column_codes[element["indices"][low:high]]
        keep = (codes >= 0) & np.repeat(rows[block], np.diff(indptr[block.start : block.stop + 1]))
        n_kept = int(keep.sum())
        indices[cursor : cursor + n_kept] = codes[keep]
        data[cursor : cursor + n_kept] = element["data"][low:high][keep]
        cursor += n_kept
    shape = (int(rows.sum()), int(columns.sum()))
    return sp.csr_matrix((data, indices, out_indptr.astype(index_dtype)), shape=shape)


def _kept_per_row(element, indptr: np.ndarray, block: slice, column_codes: np.ndarray) -> np.ndarray:
    """Stored values per row of ``block`` that fall in a kept column (``column_codes`` >= 0)."""
    lengths = np.diff(indptr[block.start : block.stop + 1])
    kept = column_codes[element["indices"][indptr[block.start] : indptr[block.stop]]] >= 0
    row_of_value = np.repeat(np.arange(lengths.size), lengths)
    return np.bincount(row_of_value[kept], minlength=lengths.size)
