"""``scpermut qc``: QC one sample file and write its filtered h5ad, metrics, summary and plots."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from scpermut._atomic import atomic_paths, json_text
from scpermut.data.io import read_counts
from scpermut.data.qc import QC_METRICS, QC_RULES, QCThresholds, filter_sample
from scpermut.data.samplesheet import SampleSpec
from scpermut.keys import Keys

log = logging.getLogger(__name__)


def qc_outputs(outdir: str | Path, sample: str) -> dict[str, Path]:
    """Paths of every file ``run_qc`` writes for ``sample``."""
    outdir = Path(outdir)
    return {
        "h5ad": outdir / f"{sample}.qc.h5ad",
        "metrics": outdir / f"{sample}.qc_metrics.tsv",
        "summary": outdir / f"{sample}.qc_summary.json",
        "violin": outdir / f"{sample}.qc_violin.png",
        "scatter": outdir / f"{sample}.qc_scatter.png",
    }


def run_qc(spec: SampleSpec, outdir: str | Path, thresholds: QCThresholds = QCThresholds(), keys: Keys = Keys()) -> dict:
    """QC one sample and write its filtered h5ad, per-cell metrics, summary and plots.

    Returns
    -------
    The summary written to ``<sample>.qc_summary.json`` (see
    :func:`scpermut.data.qc.filter_sample`, which also lists the fields set in the h5ad).
    """
    filtered, metrics, summary = filter_sample(read_counts(spec.path, spec.layer), spec, thresholds, keys)
    paths = qc_outputs(outdir, spec.sample)
    # One set: a kill anywhere leaves the previous outputs (or none), never a mix of runs.
    with atomic_paths(*paths.values()) as tmp_paths:
        tmp = dict(zip(paths, tmp_paths))
        metrics.rename_axis("barcode").to_csv(tmp["metrics"], sep="\t", float_format="%.4g")
        _plot_qc(metrics, thresholds, spec.sample, tmp["violin"], tmp["scatter"])
        tmp["summary"].write_text(json_text(summary))
        filtered.write_h5ad(tmp["h5ad"], compression="gzip")
    return summary


def _plot_qc(metrics: pd.DataFrame, thresholds: QCThresholds, sample: str, violin_path: Path, scatter_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (column, title, [rule.limit(thresholds) for rule in QC_RULES if rule.metric == column])
        for column, title in QC_METRICS.items()
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(10, 3.6))
    for axis, (column, title, limits) in zip(axes, panels):
        values = metrics[column].to_numpy(dtype=float)
        if np.ptp(values) > 0:
            axis.violinplot(values, showmedians=True)
        axis.scatter(np.random.default_rng(0).normal(1, 0.04, values.size), values, s=2, alpha=0.3, color="black")
        for limit in limits:
            if limit is not None:
                axis.axhline(limit, color="firebrick", linestyle="--", linewidth=1)
        axis.set_title(title)
        axis.set_xticks([])
    fig.suptitle(f"{sample}: QC metrics (dashed: thresholds)")
    fig.tight_layout()
    fig.savefig(violin_path, dpi=110, format="png")
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(5.5, 4.2))
    points = axis.scatter(
        metrics["total_counts"], metrics["n_genes_by_counts"], c=metrics["pct_counts_mt"], s=4, cmap="viridis", vmin=0
    )
    failed = ~metrics["passed_qc"]
    axis.scatter(metrics.loc[failed, "total_counts"], metrics.loc[failed, "n_genes_by_counts"], s=12, facecolors="none", edgecolors="firebrick", linewidths=0.6, label=f"failed QC ({int(failed.sum())})")
    fig.colorbar(points, label=QC_METRICS["pct_counts_mt"])
    axis.set_xlabel(QC_METRICS["total_counts"])
    axis.set_ylabel(QC_METRICS["n_genes_by_counts"])
    axis.set_title(f"{sample}: {int((~failed).sum())} of {len(metrics)} cells pass QC")
    axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(scatter_path, dpi=110, format="png")
    plt.close(fig)
