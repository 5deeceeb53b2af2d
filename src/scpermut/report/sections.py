"""The sections of the HTML report, each built from the annotated AnnData, the model record and the scores."""

from __future__ import annotations

import datetime

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import _keys, metrics
from scpermut._version import __version__
from scpermut.keys import Keys
from scpermut.model.persistence import ModelRecord
from scpermut.report import html, plots

# uns["scpermut_qc"] fields shown in the QC table, with their column titles.
QC_COLUMNS = {
    "role": "role",
    "n_cells_before": "cells in",
    "n_cells_after": "cells kept",
    "n_genes_before": "genes in",
    "n_genes_after": "genes kept",
    "n_labelled": "labelled cells",
    "median_genes": "median genes",
    "median_counts": "median counts",
    "median_pct_mito": "median % mito",
    "cells_removed_by.min_genes": "removed: min genes",
    "cells_removed_by.max_genes": "removed: max genes",
    "cells_removed_by.min_counts": "removed: min counts",
    "cells_removed_by.max_pct_mito": "removed: % mito",
}
MAX_PLOTTED_CELLS = 50_000  # UMAP panels show a seeded sample beyond this


def render(
    adata: ad.AnnData, model: ModelRecord, keys: Keys, result: dict, source: str, seed: int, warnings: list[str] = ()
) -> str:
    """The report as one HTML string.

    ``model`` is the model folder's record (possibly partial), ``seed`` the run's seed, which
    draws the cells a UMAP panel shows when there are too many; ``warnings`` are the run's
    warnings, shown first.
    """
    sections = [
        *([_warnings_section(warnings)] if warnings else []),
        _annotated_section(keys, result),
        _summary_section(adata, model, keys, result),
        _qc_section(adata),
        _training_section(model.history),
        _embedding_section(adata, keys, result, seed),
        _confusion_section(adata, keys, result),
        _marker_section(adata, keys, seed),
        _per_class_section(result),
        _metrics_section(result),
        _unknown_section(adata, keys, result),
    ]
    subtitle = f"{source} — {adata.n_obs:,} cells — scpermut {__version__} — {now()}"
    return html.page("scpermut report", subtitle, sections)


def _warnings_section(warnings: list[str]) -> html.Section:
    section = html.Section("warnings", f"Warnings of this run ({len(warnings)})")
    for message in warnings:
        section.add(html.text(message, "note"))
    return section


def _annotated_section(keys, result) -> html.Section:
    """The cells the user asked to annotate: how many, what they were called, how sure, how right per batch."""
    section = html.Section("annotated", "Annotated cells")
    annotated = result.get("annotated")
    if not annotated or not annotated["n_cells"]:
        return section.add(
            html.text(
                "No cell to annotate: no query cell and no reference cell labelled "
                f"'{keys.unlabeled_category}'. The scores below are on held-out reference cells.",
                "note",
            )
        )
    flagged = annotated["n_failed_qc"]
    section.add(
        html.text(
            f"{annotated['n_cells']:,} cells annotated (query cells and reference cells labelled "
            f"'{keys.unlabeled_category}'); obs['scpermut_label'] holds their predicted type."
            + (
                f" {flagged:,} of them failed QC: they are annotated but did not train the model, and are "
                "flagged obs['scpermut_qc_pass'] = False."
                if flagged
                else ""
            )
        )
    )
    confidence = annotated["confidence"] or {}
    cards = {"cells annotated": f"{annotated['n_cells']:,}", "failed QC (kept)": f"{flagged:,}"}
    if confidence:
        cards["median confidence"] = html.format_value(confidence["q50"])
        cards["confidence < 0.5"] = f"{confidence['fraction_below_0.5']:.1%}"
    section.add(html.cards(cards))
    total = max(annotated["n_cells"], 1)
    composition = pd.DataFrame(
        [(name, count, count / total) for name, count in annotated["composition"].items()],
        columns=["predicted type", "cells", "share"],
    )
    blocks = [html.block(html.heading("Composition"), html.table(composition, "composition"))]
    if confidence:
        quantiles = pd.DataFrame(
            [(name, value) for name, value in confidence.items()], columns=["confidence", "value"]
        )
        blocks.append(html.block(html.heading("Confidence (top class probability)"), html.table(quantiles, "confidence")))
    per_batch = pd.DataFrame.from_dict(annotated["per_batch"], orient="index")
    if not per_batch.empty:
        blocks.append(
            html.block(
                html.heading(f"Per batch ({keys.batch_key}); accuracy where the true label is known"),
                html.table(per_batch.rename_axis("batch"), "per_batch", index=True),
            )
        )
    section.add(html.grid(blocks))
    return section


def _summary_section(adata, model, keys, result) -> html.Section:
    section = html.Section("summary", "Run summary")
    headline = metrics.headline(result)
    scored = f" ({headline['evaluation_set']} cells)"
    shown = {
        "balanced_accuracy": "balanced accuracy" + scored,
        "macro_f1": "macro F1" + scored,
        "accuracy": "accuracy" + scored,
        "batch_entropy": "batch mixing (kNN entropy, all cells)",
        "label_silhouette": "label silhouette",
    }
    if headline["evaluation_set"]:
        section.add(
            html.text(
                f"Label transfer scored on {headline['n_cells_evaluated']:,} labelled {headline['evaluation_set']} cells the classifier did not train on."
            )
        )
    else:
        section.add(
            html.text(
                "No cell outside the training set carries a known label, so label transfer is not scored.",
                "note",
            )
        )
    section.add(
        html.cards(
            {
                label: html.format_value(headline[name])
                for name, label in shown.items()
                if headline[name] is not None
            }
        )
    )

    uns = adata.uns.get(_keys.UNS, {}) or {}
    classes = list(np.asarray(uns.get("classes", []))) if "classes" in uns else None
    sizes = {
        "cells": adata.n_obs,
        "genes in the file": adata.n_vars,
        "genes used by the model": len(model.genes) or None,
        f"batches ({keys.batch_key})": adata.obs[keys.batch_key].nunique()
        if keys.batch_key in adata.obs
        else None,
        "cell types known to the model": len(classes) if classes is not None else None,
        "class key": keys.class_key,
        "batch key": keys.batch_key,
        "unlabelled category": keys.unlabeled_category,
    }
    for column, label in (
        (_keys.SPLIT, "cells in split"),
        (_keys.ROLE, "cells with role"),
        (_keys.SAMPLE, "cells in sample"),
    ):
        if column in adata.obs:
            for value, count in adata.obs[column].astype(str).value_counts().sort_index().items():
                sizes[f"{label} {value}"] = int(count)
    if classes is not None:
        section.add(
            html.text("Cell types known to the model: " + ", ".join(map(str, classes)) + ".")
        )
    blocks = [html.block(html.heading("Data"), html.key_values(sizes, "data"))]
    run_record = model.run
    if run_record:
        blocks.append(
            html.block(html.heading("Training run"), html.key_values(_run_facts(run_record), "run"))
        )
    section.add(html.grid(blocks))
    # Parameters and versions appear in several records: show each once.
    prediction_record = {
        k: v for k, v in uns.items() if k not in ("classes", "parameters", "training", "versions")
    }
    records = (
        (
            "Run record (run.json)",
            {k: v for k, v in run_record.items() if k != "parameters"},
            "run_record",
        ),
        ("Model parameters (config.json)", {"network": model.network, "training": model.training} if model.network else None, "config"),
        ("Prediction record (uns['scpermut'])", prediction_record, "prediction"),
    )
    full = [
        html.block(html.heading(title), html.key_values(_flatten(record), name))
        for title, record, name in records
        if record
    ]
    if full:
        section.add(html.details("All parameters, versions and records", html.grid(full)))
    return section


def _run_facts(run: dict) -> dict:
    """The lines of run.json a reader looks for first."""
    versions = run.get("versions") or {}
    facts = {
        "device": run.get("device"),
        "seed": run.get("seed"),
        "training time (s)": run.get("duration_seconds"),
        "started": run.get("started"),
        "cells trained on": run.get("n_cells"),
        "labelled training cells": run.get("n_labelled_train"),
        "validation cells": run.get("n_validation"),
        "loss terms": ", ".join(run.get("loss_terms", [])) or None,
        "batch head (DANN)": run.get("batch_head", run.get("dann")),  # "dann": model folders before 0.1.0
    }
    facts.update(
        {f"epochs: {phase}": epochs for phase, epochs in (run.get("epochs_run") or {}).items()}
    )
    facts.update(
        {f"validation {name}": value for name, value in (run.get("validation") or {}).items()}
    )
    facts.update(
        {
            f"version: {name}": versions[name]
            for name in ("scpermut", "tensorflow", "tensorflow-cpu", "keras")
            if name in versions
        }
    )
    return {name: value for name, value in facts.items() if value is not None}


def _qc_section(adata) -> html.Section:
    section = html.Section("qc", "QC summary")
    summaries = qc_summaries(adata)
    if not summaries:
        return section.add(
            html.text(
                "The annotated file carries no QC record (uns['scpermut_qc']): it did not go through `scpermut qc`.",
                "note",
            )
        )
    frame = pd.DataFrame({sample: _flatten(summary) for sample, summary in summaries.items()}).T
    frame = (
        frame[[c for c in QC_COLUMNS if c in frame.columns]]
        .rename(columns=QC_COLUMNS)
        .infer_objects()
    )
    section.add(html.table(frame.rename_axis("sample"), "qc", index=True))
    blocks = []
    thresholds = next(iter(summaries.values())).get("thresholds")
    if thresholds:
        blocks.append(
            html.block(html.heading("Thresholds"), html.key_values(thresholds, "qc_thresholds"))
        )
    prepare = adata.uns.get(_keys.PREPARE_UNS)
    if prepare:
        blocks.append(
            html.block(
                html.heading("Merging and normalisation (uns['scpermut_prepare'])"),
                html.key_values(_flatten(prepare), "prepare"),
            )
        )
    return section.add(html.grid(blocks))


def _training_section(history: pd.DataFrame | None) -> html.Section:
    section = html.Section("training", "Training")
    if history is None or history.empty:
        return section.add(
            html.text("The model folder has no training history (history.csv).", "note")
        )
    section.add(
        html.image(
            plots.training_curves(history),
            "Losses and validation scores per epoch; the background colour marks the training phase.",
            "training_curves",
        )
    )
    if "phase" in history:
        epochs = history.groupby("phase", sort=False).size().rename("epochs").to_frame()
        section.add(html.table(epochs, "phases", index=True))
    return section


def _embedding_section(adata, keys, result, seed: int) -> html.Section:
    section = html.Section("umap", "UMAP of the latent space")
    if _keys.UMAP not in adata.obsm:
        return section.add(
            html.text(
                "No UMAP in the annotated file (obsm['X_umap']): run `scpermut predict` with --umap.",
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
    coordinates = np.asarray(adata.obsm[_keys.UMAP])[index]
    obs = adata.obs.iloc[index]
    colours = _class_colours(adata, keys)
    figures = []
    if keys.batch_key in obs:
        figures.append(
            html.image(
                plots.embedding(
                    coordinates, obs[keys.batch_key], f"batch ({keys.batch_key})"
                ),
                "Cells coloured by batch: mixed colours mean batches are aligned.",
                "umap_batch",
            )
        )
    if keys.class_key in obs:
        truth = obs[keys.class_key].astype(str)
        caption = "Known labels" + (
            f"; grey cells are unlabelled ('{keys.unlabeled_category}')."
            if (truth == keys.unlabeled_category).any()
            else "."
        )
        figures.append(
            html.image(
                plots.embedding(coordinates, truth, f"true label ({keys.class_key})", colours),
                caption,
                "umap_truth",
            )
        )
    if _keys.PREDICTION in obs:
        figures.append(
            html.image(
                plots.embedding(
                    coordinates, obs[_keys.PREDICTION].astype(str), "prediction", colours
                ),
                "Predicted cell types.",
                "umap_prediction",
            )
        )
    if _keys.CONFIDENCE in obs:
        figures.append(
            html.image(
                plots.embedding(
                    coordinates,
                    obs[_keys.CONFIDENCE].astype(float).rename("confidence"),
                    "confidence",
                ),
                "Probability of the predicted class.",
                "umap_confidence",
            )
        )
    return section.add(html.grid(figures))


def _confusion_section(adata, keys, result) -> html.Section:
    section = html.Section("confusion", "Confusion matrix")
    name = result["evaluation_set"]
    if name is None:
        return section.add(
            html.text("No labelled evaluation cells: nothing to compare predictions with.", "note")
        )
    truth = metrics.known_labels(adata, keys.class_key, keys.unlabeled_category)
    scored = truth.notna().to_numpy()
    if _keys.SPLIT in adata.obs:
        scored &= (adata.obs[_keys.SPLIT].astype(str) == name).to_numpy()
    table = metrics.confusion_table(
        truth[scored].astype(str), adata.obs[_keys.PREDICTION].astype(str)[scored]
    )
    section.add(
        html.image(
            plots.confusion_matrix(table, f"{name} cells, normalised per true class"),
            "Each row sums to 1: the share of a true cell type given each prediction.",
            "confusion_matrix",
        )
    )
    return section


# Markers per reference type, and at most this many labelled reference cells to rank them on.
_MARKERS_PER_TYPE = 3
_MAX_MARKER_CELLS = 5_000


def marker_genes(adata, keys, seed: int) -> dict[str, list[str]]:
    """Top marker genes of each reference cell type (Wilcoxon rank sums on the labelled reference cells).

    Empty when there are fewer than two labelled types, or no labelled reference cell.
    """
    import scanpy as sc

    if _keys.SPLIT not in adata.obs or keys.class_key not in adata.obs:
        return {}
    labelled = adata.obs[_keys.SPLIT].astype(str).isin([_keys.SPLIT_TRAIN, _keys.SPLIT_VALIDATION]).to_numpy()
    cells = np.flatnonzero(labelled)
    if cells.size > _MAX_MARKER_CELLS:
        cells = np.sort(np.random.default_rng(seed).choice(cells, _MAX_MARKER_CELLS, replace=False))
    reference = ad.AnnData(X=adata.X[cells], obs=pd.DataFrame(index=adata.obs_names[cells]), var=pd.DataFrame(index=adata.var_names))
    reference.obs["type"] = adata.obs[keys.class_key].astype(str).to_numpy()[cells]
    counts = reference.obs["type"].value_counts()
    types = sorted(counts.index[counts >= 2])
    if len(types) < 2:
        return {}
    reference = reference[reference.obs["type"].isin(types)].copy()
    sc.tl.rank_genes_groups(reference, "type", method="wilcoxon", n_genes=_MARKERS_PER_TYPE, use_raw=False)
    names = reference.uns["rank_genes_groups"]["names"]
    return {name: [str(gene) for gene in names[name]] for name in names.dtype.names}


def _marker_section(adata, keys, seed: int) -> html.Section:
    section = html.Section("markers", "Marker genes of the predicted types")
    if _keys.PREDICTION not in adata.obs:
        return section.add(html.text("The model has no classifier: no predicted types.", "note"))
    markers = marker_genes(adata, keys, seed)
    split = adata.obs[_keys.SPLIT].astype(str).to_numpy() if _keys.SPLIT in adata.obs else np.full(adata.n_obs, _keys.SPLIT_QUERY)
    annotated = np.isin(split, [_keys.SPLIT_QUERY, _keys.SPLIT_UNLABELLED])
    if not markers or not annotated.any():
        return section.add(
            html.text("Needs labelled reference cells of two or more types and cells to annotate in the same file.", "note")
        )
    genes = list(dict.fromkeys(gene for name in sorted(markers) for gene in markers[name]))
    predicted = adata.obs[_keys.PREDICTION].astype(str).to_numpy()[annotated]
    expression = adata[np.flatnonzero(annotated), genes].X
    expression = expression.toarray() if hasattr(expression, "toarray") else np.asarray(expression)
    types = [name for name in sorted(markers) if (predicted == name).any()]
    types += sorted(set(predicted) - set(types))
    if not types:
        return section
    fraction = pd.DataFrame([(expression[predicted == t] > 0).mean(axis=0) for t in types], index=types, columns=genes)
    mean = pd.DataFrame([expression[predicted == t].mean(axis=0) for t in types], index=types, columns=genes)
    section.add(
        html.image(
            plots.marker_dotplot(fraction, mean, "annotated cells by predicted type"),
            f"The top {_MARKERS_PER_TYPE} marker genes of each reference type (Wilcoxon test on the labelled "
            "reference cells), as expressed in the annotated cells grouped by prediction: a correct "
            "prediction shows its type's markers.",
            "marker_dotplot",
        )
    )
    return section


def _per_class_section(result) -> html.Section:
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


def _metrics_section(result) -> html.Section:
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


def _unknown_section(adata, keys, result) -> html.Section:
    section = html.Section("unknown", "Cells predicted as unknown")
    predictions = result["predictions"]
    if predictions is None:
        return section.add(
            html.text(
                "The model has no classifier (trained with --no-classifier): no cell type was predicted.",
                "note",
            )
        )
    threshold = ((adata.uns.get(_keys.UNS, {}) or {}).get("prediction") or {}).get(
        "unknown_threshold"
    )
    threshold_text = (
        f" (confidence below {threshold})" if threshold else " (no --unknown_threshold was set)"
    )
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
        unknown = adata.obs[_keys.PREDICTION].astype(str).to_numpy() == keys.unlabeled_category
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


def _class_colours(adata, keys) -> dict[str, str]:
    """One colour per cell type shared by the true-label and prediction panels; unknown in grey."""
    names = set(adata.obs[_keys.PREDICTION].astype(str)) if _keys.PREDICTION in adata.obs else set()
    uns = adata.uns.get(_keys.UNS, {}) or {}
    if "classes" in uns:
        names |= {str(c) for c in np.asarray(uns["classes"])}
    if keys.class_key in adata.obs:
        names |= set(adata.obs[keys.class_key].astype(str))
    names.discard(keys.unlabeled_category)
    colours = plots.category_colours(sorted(names))
    colours[keys.unlabeled_category] = plots.UNKNOWN_COLOUR
    colours["nan"] = plots.UNKNOWN_COLOUR
    return colours


def qc_summaries(adata) -> dict:
    """Return the per-sample QC summaries of ``uns["scpermut_qc"]``, keyed by sample id."""
    qc = adata.uns.get(_keys.QC_UNS) or {}
    # `scpermut prepare` stores {sample: summary}; a single `scpermut qc` output stores the summary itself.
    if "sample" in qc and not isinstance(qc["sample"], dict):
        return {str(qc["sample"]): qc}
    return {str(sample): summary for sample, summary in qc.items() if isinstance(summary, dict)}


def _flatten(record: dict, prefix: str = "") -> dict:
    """Nested mappings as ``a.b`` keys; long lists summarised by their length."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        elif isinstance(value, (list, tuple, np.ndarray)) and len(value) > 12:
            flat[name] = f"{len(value)} values"
        elif isinstance(value, np.ndarray):
            flat[name] = value.tolist()
        else:
            flat[name] = value
    return flat


def now() -> str:
    """Return the current UTC time, to the minute, for report stamps."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
