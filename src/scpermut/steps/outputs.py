"""The annotated cells as biologists take them away: ``labels.tsv``, and the query cells alone on their own genes."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import _atomic, constants
from scpermut.annotation import annotated_cells, labels_table
from scpermut.data.io import read_counts, read_h5ad
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError

# Fields prediction adds, copied onto the query cells of the user's own file.
_OBS_FIELDS = (constants.PREDICTION, constants.CONFIDENCE, constants.LABEL, constants.NOVELTY, constants.QC_PASS, constants.SPLIT)
_OBSM_FIELDS = (constants.LATENT, constants.PROBABILITIES, constants.UMAP)


def write_labels(adata: ad.AnnData, annotated_path: Path) -> Path | None:
    """``labels.tsv`` beside the annotated h5ad (not written for a model without a classifier)."""
    if constants.LABEL not in adata.obs:
        return None
    path = Path(annotated_path).parent / constants.LABELS_FILE
    _atomic.write_text(path, labels_table(adata).to_csv(sep="\t", index=False))
    return path


def write_query_cells(annotated: ad.AnnData, specs: list[SampleSpec], out_path: Path) -> int:
    """The annotated cells alone, each sample's from its own file (its genes, counts, layers, obs),
    with the fields prediction added; several files are joined on the union of their genes.

    Returns the number of cells written.
    """
    parts = []
    sample = annotated.obs[constants.SAMPLE].astype(str).to_numpy()
    wanted = annotated_cells(annotated)
    for spec in specs:
        rows = np.flatnonzero(wanted & (sample == spec.sample))
        if rows.size:
            parts.append(_own_cells(spec, annotated, rows))
    if not parts:
        raise InputError("no cell was annotated: there are no query cells to write (`query_h5ad`).")
    cells = parts[0] if len(parts) == 1 else ad.concat(parts, join="outer", merge="same", uns_merge="first")
    cells.uns[constants.UNS] = annotated.uns.get(constants.UNS, {})
    _atomic.write_h5ad(cells, out_path)
    return cells.n_obs


def _own_cells(spec: SampleSpec, annotated: ad.AnnData, rows: np.ndarray) -> ad.AnnData:
    """``spec``'s file restricted to the annotated ``rows`` (by barcode), with prediction's fields added."""
    own = read_h5ad(spec.path) if spec.path.suffix.lower() == ".h5ad" else read_counts(spec.path)
    own.obs_names = own.obs_names.astype(str)
    for names, make_unique in ((own.obs_names, own.obs_names_make_unique), (own.var_names, own.var_names_make_unique)):
        if not names.is_unique:  # as reading for QC did, so the cells and genes are those that were annotated
            make_unique()
    # The annotated names are the file's own, or prefixed with the sample id when barcodes
    # clashed between samples (the file's own then in obs["barcode"]).
    candidates = [annotated.obs_names[rows].astype(str)]
    if "barcode" in annotated.obs:
        candidates.append(pd.Index(annotated.obs["barcode"].iloc[rows].astype(str)))
    positions = max((own.obs_names.get_indexer(names) for names in candidates), key=lambda found: int((found >= 0).sum()))
    if (positions < 0).any():
        raise InputError(
            f"{spec.path}: {int((positions < 0).sum())} annotated cells are not in the file any more "
            f"(e.g. {candidates[0][positions < 0][0]}); was it changed during the run?"
        )
    cells = own[positions].copy()
    for column in _OBS_FIELDS:
        if column in annotated.obs:
            values = annotated.obs[column].iloc[rows]  # a Series keeps its categories
            values.index = cells.obs_names
            cells.obs[column] = values
    cells.obs[constants.SAMPLE] = pd.Categorical([spec.sample] * cells.n_obs)
    names = annotated.obs_names[rows]
    if not names.equals(cells.obs_names):  # prefixed with the sample id to be unique across samples
        cells.obs["barcode"] = pd.Categorical(cells.obs_names.to_numpy())
        cells.obs_names = names
    for key in _OBSM_FIELDS:
        if key in annotated.obsm:
            cells.obsm[key] = np.asarray(annotated.obsm[key])[rows]
    return cells
