"""Metrics, a self-contained HTML report and MultiQC files for an annotated AnnData.

:func:`report_texts` computes every file's text in memory; the file step that reads the
annotated h5ad and the model folder and writes the texts is :func:`scpermut.steps.report.write_report`.
The HTML sections are in :mod:`scpermut.report.sections`.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import pandas as pd

from scpermut import metrics
from scpermut._plain import json_default
from scpermut._version import __version__
from scpermut.keys import Keys
from scpermut.model.persistence import ModelRecord
from scpermut.report import multiqc
from scpermut.report.sections import now, qc_summaries, render

REPORT_FILE = "report.html"
METRICS_JSON = "metrics.json"
METRICS_TSV = "metrics.tsv"
MQC_METRICS = "scpermut_metrics_mqc.tsv"
MQC_PER_CLASS = "scpermut_per_class_mqc.tsv"
MQC_QC = "scpermut_qc_mqc.tsv"
MQC_ANNOTATED = "scpermut_annotated_mqc.tsv"


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
        "mqc_annotated": MQC_ANNOTATED,
    }
    return {key: outdir / name for key, name in names.items()}


def report_texts(
    adata: ad.AnnData,
    model: ModelRecord,
    keys: Keys,
    settings: metrics.MetricSettings,
    inputs: dict,
    source: str,
    warnings: list[str] = (),
) -> tuple[dict[str, str | None], dict]:
    """Score an annotated AnnData and build the text of every report file (None: not written).

    ``settings.seed`` should be the run's seed: it draws every sample of cells the scores and
    plots use. ``warnings`` (the run's) open the report and are listed in ``metrics.json``.

    Returns
    -------
    The texts keyed like :func:`report_outputs`, and the headline scores (see
    :func:`scpermut.metrics.headline`).
    """
    result = metrics.evaluate(adata, **keys.to_dict(), settings=settings)
    headline = metrics.headline(result)
    record = {
        "headline": headline,
        **result,
        "inputs": inputs,
        "warnings": list(warnings),
        "scpermut_version": __version__,
        "created": now(),
    }
    texts = {
        "metrics_json": json.dumps(record, indent=2, sort_keys=True, default=json_default) + "\n",
        "metrics_tsv": metrics_long_table(result).to_csv(sep="\t", index=False, float_format="%.6g"),
        "mqc_metrics": multiqc.metrics_table(result),
        "mqc_per_class": multiqc.per_class_table(result),
        "mqc_qc": multiqc.qc_table(qc_summaries(adata)),
        "mqc_annotated": multiqc.annotated_table(result),
        "html": render(adata, model, keys, result, source, settings.seed, list(warnings)),
    }
    return texts, headline


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
