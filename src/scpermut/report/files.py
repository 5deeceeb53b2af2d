"""The report's files: their paths (:func:`report_outputs`) and their texts (:func:`report_texts`).

The file step that reads the annotated h5ad and the model folder and writes the texts is
:func:`scpermut.steps.report.write_report`.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad

from scpermut import constants, metrics
from scpermut._plain import json_default
from scpermut._version import __version__
from scpermut.keys import Keys
from scpermut.model.persistence import ModelRecord
from scpermut.report import multiqc
from scpermut.report.sections import render
from scpermut.report.tables import metrics_long_table, now, qc_summaries


def report_outputs(outdir: str | Path) -> dict[str, Path]:
    """Paths of every file ``write_report`` may write (the per-class and QC MultiQC files need data)."""
    outdir = Path(outdir)
    names = {
        "html": constants.REPORT_HTML,
        "metrics_json": constants.METRICS_JSON,
        "metrics_tsv": constants.METRICS_TSV,
        "mqc_metrics": constants.MQC_METRICS,
        "mqc_per_class": constants.MQC_PER_CLASS,
        "mqc_qc": constants.MQC_QC,
        "mqc_annotated": constants.MQC_ANNOTATED,
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
    sample = only_sample(adata)
    texts = {
        "metrics_json": json.dumps(record, indent=2, sort_keys=True, default=json_default) + "\n",
        "metrics_tsv": metrics_long_table(result).to_csv(sep="\t", index=False, float_format="%.6g"),
        "mqc_metrics": multiqc.metrics_table(result, sample),
        "mqc_per_class": multiqc.per_class_table(result, sample),
        "mqc_qc": multiqc.qc_table(qc_summaries(adata), every_column=sample is not None),
        "mqc_annotated": multiqc.annotated_table(result, sample, [*model.classes, keys.unlabeled_category]),
        "html": render(adata, model, keys, result, source, settings.seed, list(warnings)),
    }
    return texts, headline


def only_sample(adata: ad.AnnData) -> str | None:
    """The sample all the cells come from (``obs["scpermut_sample"]``), or None for several or none."""
    if constants.SAMPLE not in adata.obs:
        return None
    samples = adata.obs[constants.SAMPLE].astype(str).unique()
    return str(samples[0]) if len(samples) == 1 else None
