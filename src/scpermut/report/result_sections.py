"""The report's result sections: the latent space, the confusion matrix, marker genes, per-type
and all scores, the cells called unknown."""

from __future__ import annotations

import numpy as np
import pandas as pd

from scpermut import constants, metrics
from scpermut.report import html, plots
from scpermut.report.tables import MARKERS_PER_TYPE, marker_genes, readable_gene_names

MAX_PLOTTED_CELLS = 50_000  # UMAP panels show a seeded sample beyond this


def embedding_section(adata, keys, result, seed: int) -> html.Section:
    section = html.Section("umap", "UMAP of the latent space")
    if constants.UMAP not in adata.obsm:
        return section.add(
            html.text(
                f"No UMAP in the annotated file (obsm['{constants.UMAP}']): run `scpermut predict` with --umap.",
                "note",
            )
        )
    index = np.arange(adata.n_obs)
    if adata.n_obs > MAX_PLOTTED_CELLS:
        index = np.sort(
            np.random.default_rng(seed).choice(adata.n_obs, MAX_PLOTTED_CELLS, replace=False)
        )
        section.add(
            html.text(
                f"A random sample of {MAX_PLOTTED_CELLS:,} of the {adata.n_obs:,} cells is drawn.",
                "note",
            )
        )
    coordinates = np.asarray(adata.obsm[constants.UMAP])[index]
    colours = class_colours(adata, keys)
    figures = [
        html.image(plots.embedding(coordinates, values, title, colours if by_type else None), caption, name)
        for values, title, caption, name, by_type in _embedding_panels(adata.obs.iloc[index], keys)
    ]
    return section.add(html.grid(figures))


def _embedding_panels(obs, keys) -> list[tuple]:
    """The UMAP panels the annotated cells allow: (values, title, caption, figure name, coloured
    by cell type) for batch, origin, known label, prediction and confidence."""
    panels = []
    if keys.batch_key in obs:
        panels.append((
            obs[keys.batch_key],
            f"batch ({keys.batch_key})",
            "Cells coloured by batch: mixed colours mean batches are aligned.",
            "umap_batch",
            False,
        ))
    if constants.SPLIT in obs:
        panels.append((
            _origin(obs[constants.SPLIT]),
            "reference or query",
            "Labelled reference cells, unlabelled reference cells and query cells: query cells far from "
            "every reference cell are of a kind the reference may not hold.",
            "umap_origin",
            False,
        ))
    if keys.class_key in obs:
        truth = obs[keys.class_key].astype(str)
        caption = "Known labels" + (
            f"; grey cells are unlabelled ('{keys.unlabeled_category}')."
            if (truth == keys.unlabeled_category).any()
            else "."
        )
        panels.append((truth, f"true label ({keys.class_key})", caption, "umap_truth", True))
    if constants.PREDICTION in obs:
        panels.append((obs[constants.PREDICTION].astype(str), "prediction", "Predicted cell types.", "umap_prediction", True))
    if constants.CONFIDENCE in obs:
        panels.append((
            obs[constants.CONFIDENCE].astype(float).rename("confidence"),
            "confidence",
            "Probability of the predicted class.",
            "umap_confidence",
            False,
        ))
    return panels

def confusion_section(adata, keys, result) -> html.Section:
    section = html.Section("confusion", "Confusion matrix")
    name = result["evaluation_set"]
    if name is None:
        return section.add(
            html.text("No labelled evaluation cells: nothing to compare predictions with.", "note")
        )
    truth = metrics.known_labels(adata, keys.class_key, keys.unlabeled_category)
    scored = truth.notna().to_numpy()
    if constants.SPLIT in adata.obs:
        scored &= (adata.obs[constants.SPLIT].astype(str) == name).to_numpy()
    table = metrics.confusion_table(
        truth[scored].astype(str), adata.obs[constants.PREDICTION].astype(str)[scored]
    )
    section.add(
        html.image(
            plots.confusion_matrix(table, f"{name} cells, normalised per true class"),
            "Each row sums to 1: the share of a true cell type given each prediction.",
            "confusion_matrix",
        )
    )
    return section

def marker_section(adata, keys, seed: int) -> html.Section:
    section = html.Section("markers", "Marker genes of the predicted types")
    if constants.PREDICTION not in adata.obs:
        return section.add(html.text("The model has no classifier: no predicted types.", "note"))
    markers = marker_genes(adata, keys, seed)
    split = adata.obs[constants.SPLIT].astype(str).to_numpy() if constants.SPLIT in adata.obs else np.full(adata.n_obs, constants.SPLIT_QUERY)
    annotated = np.isin(split, [constants.SPLIT_QUERY, constants.SPLIT_UNLABELLED])
    if not markers or not annotated.any():
        return section.add(
            html.text("Needs labelled reference cells of two or more types and cells to annotate in the same file.", "note")
        )
    genes = list(dict.fromkeys(gene for name in sorted(markers) for gene in markers[name]))
    predicted = adata.obs[constants.PREDICTION].astype(str).to_numpy()[annotated]
    expression = adata[np.flatnonzero(annotated), genes].X
    expression = expression.toarray() if hasattr(expression, "toarray") else np.asarray(expression)
    types = [name for name in sorted(markers) if (predicted == name).any()]
    types += sorted(set(predicted) - set(types))
    if not types:
        return section
    shown = readable_gene_names(adata.var).loc[genes].to_list()
    fraction = pd.DataFrame([(expression[predicted == t] > 0).mean(axis=0) for t in types], index=types, columns=shown)
    mean = pd.DataFrame([expression[predicted == t].mean(axis=0) for t in types], index=types, columns=shown)
    section.add(
        html.image(
            plots.marker_dotplot(fraction, mean, "annotated cells by predicted type"),
            f"The top {MARKERS_PER_TYPE} marker genes of each reference type (Wilcoxon test on the labelled "
            "reference cells), as expressed in the annotated cells grouped by prediction: a correct "
            "prediction shows its type's markers.",
            "marker_dotplot",
        )
    )
    return section

def per_class_section(result) -> html.Section:
    section = html.Section("per_class", "Per cell type")
    name = result["evaluation_set"]
    if name is None:
        return section.add(html.text("No labelled evaluation cells.", "note"))
    per_class = pd.DataFrame(result["sets"][name]["per_class"])
    figure = html.image(
        plots.f1_against_size(per_class, f"F1 per cell type ({name} cells)"),
        "Rare cell types are the hard ones: F1 against class size.",
        "f1_vs_size",
    )
    tables = html.block(
        html.heading(f"Scores of each cell type ({name} cells)"),
        html.table(per_class, "per_class"),
        html.heading("By class rarity (share of the evaluated cells)"),
        html.table(pd.DataFrame(result["sets"][name]["by_rarity"]), "by_rarity"),
    )
    return section.add(html.grid([figure, tables]))

def metrics_section(result) -> html.Section:
    section = html.Section("metrics", "Metrics")
    if result["sets"]:
        scores = pd.DataFrame.from_dict(
            {name: entry["scores"] for name, entry in result["sets"].items()}, orient="index"
        ).rename_axis("cells")
        section.add(html.heading("Label transfer")).add(
            html.table(scores, "classification", index=True)
        )
        section.add(
            html.text(
                "query: labelled query cells, the main evaluation; validation: labelled reference cells held out from training (they chose the early-stopping epoch, so slightly optimistic). A cell predicted as unknown counts as wrong.",
                "note",
            )
        )
    latent = result["latent"]
    if latent is None:
        return section.add(html.text("No latent space in the file (obsm['X_scpermut']).", "note"))
    mixing, batch_sil, label_sil = (
        latent["batch_mixing"],
        latent["batch_silhouette"],
        latent["label_silhouette"],
    )
    rows = pd.DataFrame(
        [
            (
                "batch mixing (kNN batch entropy)",
                mixing["batch_entropy"],
                mixing["n_cells"],
                mixing["n_cells_total"],
                mixing["sampled"],
                "1: neighbourhoods as mixed as the data; 0: batches apart",
            ),
            (
                "batch silhouette",
                batch_sil["value"],
                batch_sil["n_cells"],
                batch_sil["n_cells_total"],
                batch_sil["sampled"],
                "1: batches overlap within each cell type",
            ),
            (
                "label silhouette",
                label_sil["value"],
                label_sil["n_cells"],
                label_sil["n_cells_total"],
                label_sil["sampled"],
                "higher: cell types stay apart",
            ),
        ],
        columns=["score", "value", "cells scored", "cells", "sampled", "reading"],
    )
    section.add(html.heading("Integration (latent space)")).add(html.table(rows, "integration"))
    section.add(
        html.text(
            f"kNN entropy uses {mixing['n_neighbors']} neighbours; samples are seeded (seed {result['settings']['seed']}).",
            "note",
        )
    )
    return section

def _unknown_rules(prediction: dict) -> str:
    """What made a cell Unknown, as the prediction parameters say."""
    rules = []
    if prediction.get("novelty_threshold", 1) < 1:
        rules.append(f"novelty above {prediction['novelty_threshold']}")
    if prediction.get("unknown_threshold"):
        rules.append(f"confidence below {prediction['unknown_threshold']}")
    return f" ({' or '.join(rules)})" if rules else " (no rule for Unknown was set)"


def _nearest_known_types(adata, unknown: np.ndarray, classes: list) -> pd.DataFrame:
    """The known type the classifier ranks first for the Unknown cells, with their median novelty."""
    probabilities = adata.obsm[constants.PROBABILITIES][unknown]
    table = pd.DataFrame({"nearest known type": np.asarray(classes, dtype=object)[probabilities.argmax(axis=1)]})
    if constants.NOVELTY in adata.obs:
        table["novelty"] = adata.obs[constants.NOVELTY].to_numpy()[unknown]
    grouped = table.groupby("nearest known type")
    summary = grouped.size().rename("cells").to_frame()
    if "novelty" in table:
        summary["median novelty"] = grouped["novelty"].median().round(3)
    return summary.sort_values("cells", ascending=False)


def unknown_section(adata, keys, result) -> html.Section:
    section = html.Section("unknown", "Cells predicted as unknown")
    predictions = result["predictions"]
    if predictions is None:
        return section.add(
            html.text(
                "The model has no classifier (trained with --no-classifier): no cell type was predicted.",
                "note",
            )
        )
    threshold_text = _unknown_rules((adata.uns.get(constants.UNS, {}) or {}).get("prediction") or {})
    section.add(
        html.text(
            f"{predictions['n_unknown']:,} of {predictions['n_cells']:,} cells ({predictions['fraction_unknown']:.1%}) are predicted '{keys.unlabeled_category}'{threshold_text}."
        )
    )
    counts = (
        pd.Series(predictions["counts"], name="cells")
        .sort_values(ascending=False)
        .rename_axis("prediction")
        .to_frame()
    )
    blocks = [
        html.block(
            html.heading("All predictions"), html.table(counts, "prediction_counts", index=True)
        )
    ]
    if predictions["n_unknown"]:
        unknown = adata.obs[constants.PREDICTION].astype(str).to_numpy() == keys.unlabeled_category
        classes = (adata.uns.get(constants.UNS, {}) or {}).get("classes")
        if constants.PROBABILITIES in adata.obsm and classes is not None:
            blocks.append(
                html.block(
                    html.heading("Their nearest known types"),
                    html.table(_nearest_known_types(adata, unknown, list(classes)), "unknown_nearest_types", index=True),
                )
            )
        for column, title in ((keys.batch_key, "batch"), (keys.class_key, "true label")):
            if column in adata.obs:
                by = pd.crosstab(
                    adata.obs[column].astype(str), np.where(unknown, "unknown", "assigned")
                ).reindex(columns=["unknown", "assigned"], fill_value=0)
                by["fraction_unknown"] = by["unknown"] / by.sum(axis=1)
                blocks.append(
                    html.block(
                        html.heading(f"By {title} ({column})"),
                        html.table(
                            by.rename_axis(column),
                            f"unknown_by_{title.replace(' ', '_')}",
                            index=True,
                        ),
                    )
                )
    return section.add(html.grid(blocks))

def _origin(split: pd.Series) -> pd.Series:
    """Each cell's origin for the UMAP: ``reference`` (labelled), ``reference, unlabelled`` or ``query``."""
    names = {
        constants.SPLIT_TRAIN: "reference",
        constants.SPLIT_VALIDATION: "reference",
        constants.SPLIT_CALIBRATION: "reference",
        constants.SPLIT_UNLABELLED: "reference, unlabelled",
    }
    return split.astype(str).map(lambda value: names.get(value, "query")).rename("origin")


def class_colours(adata, keys, extra=()) -> dict[str, str]:
    """One colour per cell type (of the annotated file, and the ``extra`` names) shared by the
    true-label and prediction panels; unknown in grey."""
    names = set(adata.obs[constants.PREDICTION].astype(str)) if constants.PREDICTION in adata.obs else set()
    names |= {str(name) for name in extra}
    uns = adata.uns.get(constants.UNS, {}) or {}
    if "classes" in uns:
        names |= {str(c) for c in np.asarray(uns["classes"])}
    if keys.class_key in adata.obs:
        names |= set(adata.obs[keys.class_key].astype(str))
    names.discard(keys.unlabeled_category)
    colours = plots.category_colours(sorted(names))
    colours[keys.unlabeled_category] = plots.UNKNOWN_COLOUR
    colours["nan"] = plots.UNKNOWN_COLOUR
    return colours
