"""The report's view of a query mapped onto a saved reference: one UMAP of the reference sample
the model folder keeps (``reference_latent.npz``) and the cells of batches the model never
trained on, side by side in the reference's latent space."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import constants
from scpermut.annotation import compute_umap
from scpermut.report import html, plots
from scpermut.report.result_sections import MAX_PLOTTED_CELLS, class_colours


def new_batch_cells(adata, model, keys) -> np.ndarray:
    """The cells of batches the model never trained on (every cell of a file without the batch column)."""
    if keys.batch_key not in adata.obs:
        return np.ones(adata.n_obs, dtype=bool)
    return ~adata.obs[keys.batch_key].astype(str).isin([str(batch) for batch in model.batches]).to_numpy()


def reference_and_query(adata, model, keys, seed: int):
    """The UMAP coordinates, origin and label of the reference sample's cells and the new-batch
    cells (a seeded sample of at most ``MAX_PLOTTED_CELLS``); None when there is nothing to map
    onto, nothing mapped, or no UMAP asked for (the annotated file has none: it costs time)."""
    reference = model.reference
    if not reference or constants.LATENT not in adata.obsm or constants.UMAP not in adata.obsm:
        return None
    cells = np.flatnonzero(new_batch_cells(adata, model, keys))
    if cells.size == 0:
        return None
    if cells.size > MAX_PLOTTED_CELLS:
        cells = np.sort(np.random.default_rng(seed).choice(cells, MAX_PLOTTED_CELLS, replace=False))
    n_reference = len(reference["latent"])
    joined = ad.AnnData(obs=pd.DataFrame(index=[str(i) for i in range(n_reference + cells.size)]))
    joined.obsm[constants.LATENT] = np.vstack(
        [reference["latent"], np.asarray(adata.obsm[constants.LATENT])[cells]]
    ).astype(np.float32)
    compute_umap(joined, seed)
    if constants.UMAP not in joined.obsm:
        return None
    query_labels = (
        adata.obs[constants.PREDICTION].astype(str).to_numpy()[cells]
        if constants.PREDICTION in adata.obs
        else np.full(cells.size, "query")
    )
    reference_labels = np.asarray(model.classes, dtype=object)[reference["classes"]].astype(str)
    origin = np.repeat(["reference", "query"], [n_reference, cells.size])
    return (
        np.asarray(joined.obsm[constants.UMAP]),
        pd.Series(origin, name="origin"),
        pd.Series(np.concatenate([reference_labels, query_labels]), name="label"),
    )


def mapping_section(adata, model, keys, seed: int) -> html.Section:
    section = html.Section("mapping", "The query on the reference")
    mapped = reference_and_query(adata, model, keys, seed)
    if mapped is None:
        return section.add(
            html.text(
                "Shown when cells of batches the model never trained on were mapped, with a UMAP, onto a model "
                "folder that keeps a sample of its reference's latent (reference_latent.npz, models saved by this version).",
                "note",
            )
        )
    coordinates, origin, labels = mapped
    n_reference = int((origin == "reference").sum())
    section.add(
        html.text(
            f"One UMAP of {n_reference:,} reference cells (the model's stratified sample of its labelled cells) "
            f"and {len(origin) - n_reference:,} cells of new batches, in the reference's latent space: query cells "
            "that sit on reference cells of their predicted type were mapped where the reference keeps that type."
        )
    )
    colours = class_colours(adata, keys, extra=model.classes)
    figures = [
        html.image(
            plots.embedding(coordinates, origin, "reference or query"),
            "Reference and query cells: query cells far from every reference cell are of a kind the reference may not hold.",
            "mapping_origin",
        ),
        html.image(
            plots.embedding(coordinates, labels, "reference type or prediction", colours),
            "Reference cells by their type, query cells by their prediction, in one palette.",
            "mapping_label",
        ),
    ]
    return section.add(html.grid(figures))
