"""The HTML report as one page: its opening sections (warnings, annotated cells, summary, QC,
training), then the results of :mod:`scpermut.report.result_sections`."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import constants, metrics
from scpermut._version import __version__
from scpermut.data.qc import QC_RULES
from scpermut.keys import Keys
from scpermut.model.persistence import ModelRecord
from scpermut.report import html, plots
from scpermut.report.composition import composition_section
from scpermut.report.mapping import mapping_section
from scpermut.report.result_sections import (
    confusion_section,
    embedding_section,
    marker_section,
    metrics_section,
    per_class_section,
    unknown_section,
)
from scpermut.report.tables import flatten, now, qc_summaries

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
    **{f"cells_removed_by.{rule.threshold}": f"removed: {rule.threshold}" for rule in QC_RULES},
}


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
        composition_section(adata, keys),
        _summary_section(adata, model, keys, result),
        _qc_section(adata),
        _training_section(model.history),
        embedding_section(adata, keys, result, seed),
        mapping_section(adata, model, keys, seed),
        confusion_section(adata, keys, result),
        marker_section(adata, keys, seed),
        per_class_section(result),
        metrics_section(result),
        unknown_section(adata, keys, result),
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
    _add_headline(section, metrics.headline(result))
    uns = adata.uns.get(constants.UNS, {}) or {}
    classes = list(np.asarray(uns.get("classes", []))) if "classes" in uns else None
    if classes is not None:
        section.add(
            html.text("Cell types known to the model: " + ", ".join(map(str, classes)) + ".")
        )
    blocks = [html.block(html.heading("Data"), html.key_values(_data_sizes(adata, model, keys, classes), "data"))]
    run_record = model.run
    if run_record:
        blocks.append(
            html.block(html.heading("Training run"), html.key_values(_run_facts(run_record), "run"))
        )
    section.add(html.grid(blocks))
    full = _full_records(model, uns)
    if full:
        section.add(html.details("All parameters, versions and records", html.grid(full)))
    return section


def _add_headline(section: html.Section, headline: dict) -> None:
    """What the label transfer was scored on, and the headline scores as cards."""
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


def _data_sizes(adata, model, keys, classes) -> dict:
    """The data's sizes and keys, and its cells per split, role and sample."""
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
        (constants.SPLIT, "cells in split"),
        (constants.ROLE, "cells with role"),
        (constants.SAMPLE, "cells in sample"),
    ):
        if column in adata.obs:
            for value, count in adata.obs[column].astype(str).value_counts().sort_index().items():
                sizes[f"{label} {value}"] = int(count)
    return sizes


def _full_records(model, uns: dict) -> list:
    """Every record of the run as key-value blocks; parameters and versions, which appear in
    several records, shown once."""
    prediction_record = {
        k: v for k, v in uns.items() if k not in ("classes", "parameters", "training", "versions")
    }
    records = (
        (
            "Run record (run.json)",
            {k: v for k, v in model.run.items() if k != "parameters"},
            "run_record",
        ),
        ("Model parameters (config.json)", {"network": model.network, "training": model.training} if model.network else None, "config"),
        ("Prediction record (uns['scpermut'])", prediction_record, "prediction"),
    )
    return [
        html.block(html.heading(title), html.key_values(flatten(record), name))
        for title, record, name in records
        if record
    ]

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
    frame = pd.DataFrame({sample: flatten(summary) for sample, summary in summaries.items()}).T
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
    prepare = adata.uns.get(constants.PREPARE_UNS)
    if prepare:
        blocks.append(
            html.block(
                html.heading("Merging and normalisation (uns['scpermut_prepare'])"),
                html.key_values(flatten(prepare), "prepare"),
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
