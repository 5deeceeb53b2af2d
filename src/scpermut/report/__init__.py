"""``scpermut report``: metrics, a self-contained HTML report and MultiQC files for an annotated AnnData."""

from __future__ import annotations

import datetime
import json
import logging
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import __version__, _keys, metrics
from scpermut._atomic import write_text
from scpermut.data.io import read_h5ad
from scpermut.errors import InputError
from scpermut.report import html, multiqc, plots

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"
METRICS_JSON = "metrics.json"
METRICS_TSV = "metrics.tsv"
MQC_METRICS = "scpermut_metrics_mqc.tsv"
MQC_PER_CLASS = "scpermut_per_class_mqc.tsv"
MQC_QC = "scpermut_qc_mqc.tsv"
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


def report_outputs(outdir: str | Path) -> dict[str, Path]:
    """Paths of every file ``write_report`` may write (the per-class and QC MultiQC files need data)."""
    outdir = Path(outdir)
    names = {
        "html": REPORT_FILE,
        "metrics_json": METRICS_JSON,
        "metrics_tsv": METRICS_TSV,
        "mqc_metrics": MQC_METRICS,
        "mqc_per_class": MQC_PER_CLASS,
        "mqc_qc": MQC_QC,
    }
    return {key: outdir / name for key, name in names.items()}


def write_report(
    annotated: str | Path | ad.AnnData,
    model_dir: str | Path,
    outdir: str | Path,
    settings: metrics.MetricSettings = metrics.MetricSettings(),
) -> dict:
    """Score an annotated AnnData and write the report, metrics and MultiQC files to ``outdir``.

    Everything is computed before the first file is written, and each file is written
    atomically, so a failure leaves no partial report.

    Parameters
    ----------
    annotated
        Output of ``scpermut predict`` (path or AnnData).
    model_dir
        The model folder used for the prediction (``history.csv``, ``run.json``, ``config.json``).
    outdir
        Folder for ``report.html``, ``metrics.json``, ``metrics.tsv`` and ``*_mqc.tsv``.

    Returns
    -------
    dict
        ``outputs`` (name to written path) and ``headline`` (see :func:`scpermut.metrics.headline`).
    """
    source = str(annotated) if not isinstance(annotated, ad.AnnData) else "AnnData in memory"
    adata = annotated if isinstance(annotated, ad.AnnData) else _read_annotated(Path(annotated))
    model = read_model_records(Path(model_dir))
    keys = resolve_keys(adata, model)
    for key in ("class_key", "batch_key"):
        if keys[key] not in adata.obs:
            log.warning(
                "%s: obs has no column '%s' (%s); the scores that need it are left out",
                source,
                keys[key],
                key,
            )

    result = metrics.evaluate(adata, **keys, settings=settings)
    headline = metrics.headline(result)
    record = {
        "headline": headline,
        **result,
        "inputs": {"annotated": source, "model": str(model_dir)},
        "scpermut_version": __version__,
        "created": _now(),
    }
    texts = {
        "metrics_json": json.dumps(record, indent=2, sort_keys=True, default=_json_default) + "\n",
        "metrics_tsv": metrics_long_table(result).to_csv(
            sep="\t", index=False, float_format="%.6g"
        ),
        "mqc_metrics": multiqc.metrics_table(result),
        "mqc_per_class": multiqc.per_class_table(result),
        "mqc_qc": multiqc.qc_table(_qc_summaries(adata)),
        "html": render(adata, model, keys, result, source),
    }
    outputs = report_outputs(outdir)
    written = {}
    for name, content in texts.items():
        if content is not None:
            write_text(outputs[name], content)
            written[name] = outputs[name]
        elif outputs[
            name
        ].exists():  # left by an earlier report on other data: it would mislead MultiQC
            outputs[name].unlink()
    return {"outputs": written, "headline": headline}


def _read_annotated(path: Path) -> ad.AnnData:
    adata = read_h5ad(path, what="annotated h5ad")
    if _keys.PREDICTION not in adata.obs and _keys.LATENT not in adata.obsm:
        raise InputError(
            f"{path}: no obs['{_keys.PREDICTION}'] nor obsm['{_keys.LATENT}']; run `scpermut predict` on it first."
        )
    return adata


def read_model_records(model_dir: Path) -> dict:
    """The model folder's ``config.json``, ``run.json`` and ``history.csv`` (each None when absent)."""
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model folder not found.")
    records = {}
    for name in ("config", "run", "preprocess"):
        path = model_dir / f"{name}.json"
        records[name] = json.loads(path.read_text()) if path.is_file() else None
    history = model_dir / "history.csv"
    records["history"] = (
        pd.read_csv(history) if history.is_file() and history.stat().st_size else None
    )
    genes = model_dir / "genes.txt"
    records["n_model_genes"] = (
        sum(1 for line in genes.read_text().splitlines() if line.strip())
        if genes.is_file()
        else None
    )
    return records


def resolve_keys(adata: ad.AnnData, model: dict) -> dict:
    """Class, batch and unlabelled keys: from the annotated file's records, then the model's, then the defaults."""
    sources = [
        adata.uns.get(_keys.UNS),
        adata.uns.get(_keys.PREPARE_UNS),
        model.get("preprocess"),
        model.get("config"),
        model.get("run"),
    ]
    defaults = {
        "class_key": _keys.DEFAULT_CLASS_KEY,
        "batch_key": _keys.DEFAULT_BATCH_KEY,
        "unlabeled_category": _keys.DEFAULT_UNLABELED_CATEGORY,
    }
    keys = {}
    for name, default in defaults.items():
        keys[name] = next(
            (
                str(source[name])
                for source in sources
                if isinstance(source, dict) and source.get(name) is not None
            ),
            default,
        )
    return keys


def metrics_long_table(result: dict) -> pd.DataFrame:
    """Every score as one row: ``scope`` (set, set/class/<name>, set/rarity/<group>, latent), ``metric``, ``value``."""
    rows = []
    for name, entry in result["sets"].items():
        rows += [(name, metric, value) for metric, value in entry["scores"].items()]
        for row in entry["per_class"]:
            rows += [
                (f"{name}/class/{row['class']}", metric, row[metric])
                for metric in ("n_cells", "precision", "recall", "f1")
            ]
        for row in entry["by_rarity"]:
            rows += [
                (f"{name}/rarity/{row['rarity']}", metric, row[metric])
                for metric in ("n_classes", "n_cells", "macro_f1", "mean_recall", "mean_precision")
            ]
    if result["predictions"] is not None:
        rows += [
            ("predictions", metric, result["predictions"][metric])
            for metric in ("n_cells", "n_unknown", "fraction_unknown", "mean_confidence")
        ]
    for metric, value in metrics.headline(result).items():
        if metric in ("batch_entropy", "batch_silhouette", "label_silhouette"):
            rows.append(("latent", metric, value))
    return pd.DataFrame(rows, columns=["scope", "metric", "value"])


def render(adata: ad.AnnData, model: dict, keys: dict, result: dict, source: str) -> str:
    """The report as one HTML string."""
    sections = [
        _summary_section(adata, model, keys, result),
        _qc_section(adata),
        _training_section(model.get("history")),
        _embedding_section(adata, keys, result),
        _confusion_section(adata, keys, result),
        _per_class_section(result),
        _metrics_section(result),
        _unknown_section(adata, keys, result),
    ]
    subtitle = f"{source} — {adata.n_obs:,} cells — scpermut {__version__} — {_now()}"
    return html.page("scpermut report", subtitle, sections)


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
        "genes used by the model": model.get("n_model_genes"),
        f"batches ({keys['batch_key']})": adata.obs[keys["batch_key"]].nunique()
        if keys["batch_key"] in adata.obs
        else None,
        "cell types known to the model": len(classes) if classes is not None else None,
        "class key": keys["class_key"],
        "batch key": keys["batch_key"],
        "unlabelled category": keys["unlabeled_category"],
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
    run_record = model.get("run") or {}
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
        ("Model parameters (config.json)", model.get("config"), "config"),
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
        "batch adversary (DANN)": run.get("dann"),
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
    summaries = _qc_summaries(adata)
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


def _embedding_section(adata, keys, result) -> html.Section:
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
            np.random.default_rng(0).choice(adata.n_obs, MAX_PLOTTED_CELLS, replace=False)
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
    if keys["batch_key"] in obs:
        figures.append(
            html.image(
                plots.embedding(
                    coordinates, obs[keys["batch_key"]], f"batch ({keys['batch_key']})"
                ),
                "Cells coloured by batch: mixed colours mean batches are aligned.",
                "umap_batch",
            )
        )
    if keys["class_key"] in obs:
        truth = obs[keys["class_key"]].astype(str)
        caption = "Known labels" + (
            f"; grey cells are unlabelled ('{keys['unlabeled_category']}')."
            if (truth == keys["unlabeled_category"]).any()
            else "."
        )
        figures.append(
            html.image(
                plots.embedding(coordinates, truth, f"true label ({keys['class_key']})", colours),
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
    truth = metrics.known_labels(adata, keys["class_key"], keys["unlabeled_category"])
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
            f"{predictions['n_unknown']:,} of {predictions['n_cells']:,} cells ({predictions['fraction_unknown']:.1%}) are predicted '{keys['unlabeled_category']}'{threshold_text}."
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
        unknown = adata.obs[_keys.PREDICTION].astype(str).to_numpy() == keys["unlabeled_category"]
        for column, title in ((keys["batch_key"], "batch"), (keys["class_key"], "true label")):
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
    if keys["class_key"] in adata.obs:
        names |= set(adata.obs[keys["class_key"]].astype(str))
    names.discard(keys["unlabeled_category"])
    colours = plots.category_colours(sorted(names))
    colours[keys["unlabeled_category"]] = plots.UNKNOWN_COLOUR
    colours["nan"] = plots.UNKNOWN_COLOUR
    return colours


def _qc_summaries(adata) -> dict:
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


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
