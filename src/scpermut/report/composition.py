"""The readouts of a study: what the annotated cells are per sample and per condition, how sure each
predicted type is, and which cells are the least sure."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scpermut import constants
from scpermut.annotation import annotated_cells
from scpermut.report import html, plots

# Cells listed by name in the report (the least confident first); labels.tsv lists them all.
LISTED_CELLS = 50
LOW_CONFIDENCE = 0.5


def composition_section(adata, keys) -> html.Section:
    """Predicted type x sample (and x condition), confidence per predicted type, the least sure cells."""
    section = html.Section("composition", "Composition and confidence per sample")
    if constants.PREDICTION not in adata.obs:
        return section.add(html.text("The model has no classifier: no predicted types.", "note"))
    annotated = annotated_cells(adata)
    if not annotated.any():
        return section.add(html.text("No cell to annotate: nothing to compose.", "note"))
    cells = adata.obs.loc[annotated]
    predicted = cells[constants.PREDICTION].astype(str).rename("predicted type")
    section.add(html.text(
        f"The {int(annotated.sum()):,} annotated cells by predicted type, as a share of each sample's annotated "
        f"cells (obs['{constants.PREDICTION}']; every cell with its label and confidence is in {constants.LABELS_FILE})."
    ))
    groups = [(constants.SAMPLE, "sample")] if constants.SAMPLE in cells else []
    if keys.batch_key in cells and (not groups or cells[keys.batch_key].nunique() > cells[constants.SAMPLE].nunique()):
        groups.append((keys.batch_key, f"batch ({keys.batch_key})"))
    if keys.condition_key and keys.condition_key in cells:
        groups.append((keys.condition_key, f"condition ({keys.condition_key})"))
    for column, title in groups:
        shares = pd.crosstab(cells[column].astype(str).rename(title), predicted, normalize="index")
        counts = cells[column].astype(str).value_counts().reindex(shares.index)
        section.add(html.image(
            plots.composition_bars(shares, f"predicted type per {title}"),
            f"Share of each predicted type among the annotated cells of each {title}.",
            f"composition_{column}",
        ))
        section.add(html.table(shares.assign(cells=counts.to_numpy()), f"composition_by_{column}", index=True))
    section.add(html.grid([
        html.block(html.heading("Confidence per predicted type"), html.table(_confidence_per_type(cells), "confidence_per_type")),
        html.block(
            html.heading(f"The {LISTED_CELLS} least confident annotated cells"),
            html.table(_least_confident(adata, annotated), "least_confident_cells"),
        ),
    ]))
    return section


def _confidence_per_type(cells: pd.DataFrame) -> pd.DataFrame:
    """Per predicted type: cells, median and 10 % quantile of the confidence, share below 0.5 (and mean novelty)."""
    confidence = cells[constants.CONFIDENCE].astype(float)
    by_type = confidence.groupby(cells[constants.PREDICTION].astype(str), observed=True)
    table = pd.DataFrame({
        "cells": by_type.size(),
        "median confidence": by_type.median(),
        "q10 confidence": by_type.quantile(0.1),
        f"share below {LOW_CONFIDENCE}": by_type.apply(lambda values: float((values < LOW_CONFIDENCE).mean())),
    })
    if constants.NOVELTY in cells:
        table["mean novelty"] = cells[constants.NOVELTY].astype(float).groupby(cells[constants.PREDICTION].astype(str), observed=True).mean()
    return table.sort_values("cells", ascending=False).rename_axis("predicted type").reset_index()


def _least_confident(adata, annotated: np.ndarray) -> pd.DataFrame:
    """The annotated cells of lowest confidence (those predicted 'Unknown' among them), least sure first."""
    obs = adata.obs.loc[annotated]
    order = np.argsort(obs[constants.CONFIDENCE].astype(float).to_numpy(), kind="stable")[:LISTED_CELLS]
    listed = obs.iloc[order]
    table = pd.DataFrame({
        "cell": listed.index.astype(str),
        "sample": listed[constants.SAMPLE].astype(str).to_numpy() if constants.SAMPLE in listed else "",
        "predicted type": listed[constants.PREDICTION].astype(str).to_numpy(),
        "confidence": listed[constants.CONFIDENCE].astype(float).to_numpy(),
    })
    if constants.NOVELTY in listed:
        table["novelty"] = listed[constants.NOVELTY].astype(float).to_numpy()
    return table
