"""``scpermut predict``: annotate an .h5ad (or 10x .h5) file with a model folder."""

from __future__ import annotations

from pathlib import Path

from scpermut import _atomic, constants
from scpermut.annotation import annotate
from scpermut.data.io import read_counts, read_h5ad
from scpermut.model.api import Model
from scpermut.steps.outputs import write_labels


def predict_file(
    input_path: str | Path,
    model_dir: str | Path,
    out_path: str | Path,
    *,
    recorded_model: str | Path | None = None,
    recorded_input: str | Path | None = None,
    **options,
) -> dict:
    """``scpermut predict``: annotate an .h5ad (or 10x .h5) file with a model folder and write the result.

    Returns
    -------
    A short summary: cells, missing genes, cells per predicted type, mean confidence. Beside
    ``out_path``, ``labels.tsv`` lists every cell's label and confidence (see :func:`scpermut.steps.outputs.labels_table`).
    ``recorded_model`` is the model path written to ``uns["scpermut"]["model"]`` (default:
    ``model_dir``; ``scpermut run`` names the published folder), ``recorded_input`` the input named
    in ``uns["scpermut"]["prediction"]["source"]`` and in messages (default: ``input_path``).
    """
    input_path, out_path = Path(input_path), Path(out_path)
    model = Model.load(model_dir)
    if input_path.suffix.lower() == ".h5":
        adata = read_counts(input_path)
    else:
        adata = read_h5ad(input_path)
    annotate(adata, model, source=str(recorded_input or input_path), **options)
    adata.uns[constants.UNS]["model"] = str(Path(recorded_model or model_dir).resolve())
    _atomic.write_h5ad(adata, out_path)
    write_labels(adata, out_path)
    summary = {"n_cells": adata.n_obs, "genes_missing": int(adata.uns[constants.UNS]["genes_missing"])}
    if constants.PREDICTION in adata.obs:
        summary["predicted"] = adata.obs[constants.PREDICTION].value_counts().to_dict()
        summary["mean_confidence"] = float(adata.obs[constants.CONFIDENCE].mean())
    return summary
