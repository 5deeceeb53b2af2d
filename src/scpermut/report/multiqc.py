"""MultiQC custom-content tables (``*_mqc.tsv``): a commented YAML header, then a TSV.

MultiQC finds any ``*_mqc.tsv`` file, reads the ``# key: value`` header lines as the section
configuration and the rest as a table whose first column names the rows
(https://docs.seqera.io/multiqc/custom_content). Header values are written as JSON, which
is valid YAML on one line.
"""

from __future__ import annotations

import json

import pandas as pd

from scpermut import metrics

COLUMN_FORMATS = {
    "n_cells": {"title": "Cells", "format": "{:,.0f}", "scale": False},
    "accuracy": {"title": "Accuracy", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "balanced_accuracy": {
        "title": "Balanced accuracy",
        "min": 0,
        "max": 1,
        "scale": "RdYlGn",
        "format": "{:,.3f}",
    },
    "macro_f1": {"title": "Macro F1", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "mcc": {"title": "MCC", "min": -1, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "cohen_kappa": {
        "title": "Cohen's kappa",
        "min": -1,
        "max": 1,
        "scale": "RdYlGn",
        "format": "{:,.3f}",
    },
    "ari": {"title": "ARI", "min": -1, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "nmi": {"title": "NMI", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "fraction_unknown": {
        "title": "Unknown",
        "min": 0,
        "max": 1,
        "scale": "OrRd",
        "format": "{:,.3f}",
    },
    "batch_entropy": {
        "title": "Batch mixing",
        "min": 0,
        "max": 1,
        "scale": "RdYlGn",
        "format": "{:,.3f}",
    },
    "batch_silhouette": {
        "title": "Batch silhouette",
        "min": 0,
        "max": 1,
        "scale": "RdYlGn",
        "format": "{:,.3f}",
    },
    "label_silhouette": {
        "title": "Label silhouette",
        "min": 0,
        "max": 1,
        "scale": "RdYlGn",
        "format": "{:,.3f}",
    },
    "precision": {"title": "Precision", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "recall": {"title": "Recall", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "f1": {"title": "F1", "min": 0, "max": 1, "scale": "RdYlGn", "format": "{:,.3f}"},
    "n_cells_before": {"title": "Cells in", "format": "{:,.0f}", "scale": False},
    "n_cells_after": {"title": "Cells kept", "format": "{:,.0f}", "scale": "Blues"},
    "n_genes_before": {"title": "Genes in", "format": "{:,.0f}", "scale": False},
    "n_genes_after": {"title": "Genes kept", "format": "{:,.0f}", "scale": False},
    "n_labelled": {"title": "Labelled cells", "format": "{:,.0f}", "scale": False},
    "median_genes": {"title": "Median genes", "format": "{:,.0f}", "scale": "Purples"},
    "median_counts": {"title": "Median counts", "format": "{:,.0f}", "scale": "Purples"},
    "median_pct_mito": {
        "title": "Median % mito",
        "max": 100,
        "min": 0,
        "suffix": "%",
        "format": "{:,.2f}",
        "scale": "OrRd",
    },
}


def custom_content(
    frame: pd.DataFrame,
    section_id: str,
    name: str,
    description: str,
    first_column: str,
    sample: str | None = None,
    columns: list[str] | None = None,
) -> str:
    """The text of one ``*_mqc.tsv`` table section: YAML header comments, a header row, the rows.

    With ``sample`` (a report of one sample's cells) each row is named ``SAMPLE: row`` and the
    table has exactly ``columns`` (empty where the sample has no value), so the reports of
    samples mapped in tasks of their own make distinct rows of one MultiQC table: MultiQC keeps
    the column list of the file it reads last, which then names every column of every sample.
    """
    if sample is not None:
        frame = frame.set_axis([f"{sample}: {row}" for row in frame.index], axis=0)
        if columns is not None:
            frame = frame.reindex(columns=columns)
    config = {
        "id": section_id,
        "section_name": f"scpermut: {name}",
        "description": description,
        "plot_type": "table",
        "format": "tsv",
        "pconfig": {
            "id": f"{section_id}_table",
            "title": f"scpermut: {name.lower()}",
            "col1_header": first_column,
        },
        "headers": {
            column: COLUMN_FORMATS.get(column, {"title": column}) for column in frame.columns
        },
    }
    header = "".join(f"# {key}: {json.dumps(value)}\n" for key, value in config.items())
    body = frame.to_csv(
        sep="\t", index=True, index_label=first_column, float_format="%.4f", na_rep=""
    )
    return header + body


def metrics_table(metric_result: dict, sample: str | None = None) -> str:
    """Headline label-transfer scores per evaluation set, with the integration scores alongside."""
    headline = metrics.headline(metric_result)
    integration = {
        name: headline[name] for name in ("batch_entropy", "batch_silhouette", "label_silhouette")
    }
    columns = ["n_cells", *metrics.LABEL_SCORES, "fraction_unknown"]
    rows = {
        f"{name} cells": {**{c: entry["scores"][c] for c in columns}, **integration}
        for name, entry in metric_result["sets"].items()
    }
    if not rows:
        rows = {"all cells": {"fraction_unknown": headline["fraction_unknown"], **integration}}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    description = (
        "Label transfer scored on labelled cells the classifier never trained on "
        "(query: the cells to annotate; validation: held-out reference cells), and batch mixing of the latent space."
    )
    return custom_content(
        frame, "scpermut_metrics", "Label transfer and integration", description, "Evaluated cells", sample,
        [*columns, *integration],
    )


def per_class_table(metric_result: dict, sample: str | None = None) -> str | None:
    """Per-class precision, recall and F1 of the headline evaluation set (None when nothing was scored)."""
    name = metric_result["evaluation_set"]
    if name is None:
        return None
    frame = pd.DataFrame(metric_result["sets"][name]["per_class"]).set_index("class")[
        ["n_cells", "precision", "recall", "f1"]
    ]
    description = f"Scores of each cell type on the {name} cells."
    return custom_content(frame, "scpermut_per_class", "Per cell type", description, "Cell type", sample)


def qc_table(qc_summaries: dict, every_column: bool = False) -> str | None:
    """Per-sample QC counts and medians from ``uns["scpermut_qc"]`` (None without QC records);
    columns no sample has a value for are left out unless ``every_column``."""
    if not qc_summaries:
        return None
    columns = [
        "n_cells_before",
        "n_cells_after",
        "n_genes_before",
        "n_genes_after",
        "n_labelled",
        "median_genes",
        "median_counts",
        "median_pct_mito",
    ]
    frame = pd.DataFrame.from_dict(
        {sample: {c: summary.get(c) for c in columns} for sample, summary in qc_summaries.items()},
        orient="index",
    )
    if not every_column:
        frame = frame.dropna(axis=1, how="all")
    return custom_content(
        frame,
        "scpermut_qc",
        "Sample QC",
        "Cells and genes before and after the per-sample QC filters.",
        "Sample",
    )


def annotated_table(metric_result: dict, sample: str | None = None, classes: list[str] = ()) -> str | None:
    """The annotated cells per batch: cells, cells failing QC, accuracy where truth is known (None when none).

    With ``sample``, a column per name of ``classes`` (the model's types and its unknown label),
    0 for a type no cell of the sample was called."""
    annotated = metric_result.get("annotated")
    if not annotated or not annotated["n_cells"]:
        return None
    frame = pd.DataFrame.from_dict(annotated["per_batch"], orient="index")
    confidence = annotated["confidence"] or {}
    frame.loc["all annotated cells", "n_cells"] = annotated["n_cells"]
    if confidence:
        frame.loc["all annotated cells", "median_confidence"] = confidence["q50"]
    for name, count in annotated["composition"].items():
        frame.loc["all annotated cells", f"predicted {name}"] = count
    description = (
        "The cells to annotate (query and unlabelled reference cells): cells per batch and, where "
        "their true label is known, accuracy; composition and median confidence over all of them."
    )
    columns = None
    if sample is not None:
        predicted = [f"predicted {name}" for name in dict.fromkeys([*classes, *annotated["composition"]])]
        frame.loc["all annotated cells", [column for column in predicted if column not in frame]] = 0
        columns = ["n_cells", "n_labelled", "accuracy", "balanced_accuracy", "median_confidence", *predicted]
    return custom_content(frame, "scpermut_annotated", "Annotated cells", description, "Batch", sample, columns)
