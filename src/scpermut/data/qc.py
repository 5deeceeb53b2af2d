"""Per-sample quality control: standard obs columns, cell and gene filters, metrics and plots."""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import _keys
from scpermut._atomic import atomic_path, write_h5ad, write_json
from scpermut.data.io import read_counts
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError

log = logging.getLogger(__name__)

MITO_PREFIXES = ("MT-", "mt-", "Mt-")


@dataclass(frozen=True)
class QCThresholds:
    """Cell and gene filters; 0 for ``max_genes`` and 100 for ``max_pct_mito`` switch them off."""

    min_genes: int = 200
    max_genes: int = 0
    min_counts: int = 0
    max_pct_mito: float = 20.0
    min_cells: int = 3


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


def standardise_obs(
    adata: ad.AnnData, spec: SampleSpec, *, class_key: str, batch_key: str, unlabeled_category: str
) -> None:
    """Write the sample, batch, label and role columns every later step reads, in place."""
    source = spec.path
    if spec.batch_col is not None:
        if spec.batch_col not in adata.obs:
            raise InputError(f"{source}: batch column '{spec.batch_col}' does not exist in obs (columns: {', '.join(adata.obs.columns)}).")
        if (n_missing := int(adata.obs[spec.batch_col].isna().sum())) > 0:
            raise InputError(f"{source}: batch column '{spec.batch_col}' is empty for {n_missing} cells; fill it in or remove those cells.")
        batches = adata.obs[spec.batch_col].astype(str).to_numpy()
    else:
        batches = np.full(adata.n_obs, spec.sample, dtype=object)

    label_col = spec.label_col or class_key
    if label_col in adata.obs:
        labels = adata.obs[label_col].astype(object)
        unknown = {spec.unknown_label or unlabeled_category, unlabeled_category}
        labels = labels.where(labels.notna() & ~labels.astype(str).isin(unknown), unlabeled_category).astype(str).to_numpy()
    elif spec.label_col is not None or spec.role == "reference":
        # A reference without labels is almost always a wrong column name, so say so.
        raise InputError(f"{source}: label column '{label_col}' does not exist in obs (columns: {', '.join(adata.obs.columns)}).")
    else:
        labels = np.full(adata.n_obs, unlabeled_category, dtype=object)

    if batch_key != spec.batch_col and batch_key in adata.obs:
        adata.obs[f"original_{batch_key}"] = adata.obs[batch_key]
    adata.obs[batch_key] = pd.Categorical(batches)
    if class_key != label_col and class_key in adata.obs:
        adata.obs[f"original_{class_key}"] = adata.obs[class_key]
    adata.obs[class_key] = pd.Categorical(labels)
    adata.obs[_keys.SAMPLE] = pd.Categorical([spec.sample] * adata.n_obs)
    adata.obs[_keys.ROLE] = pd.Categorical([spec.role] * adata.n_obs, categories=["reference", "query"])


def compute_qc_metrics(adata: ad.AnnData) -> pd.DataFrame:
    """Per-cell detected genes, total counts and % mitochondrial counts (scanpy's definitions)."""
    import scanpy as sc

    adata.var["mt"] = adata.var_names.str.startswith(MITO_PREFIXES)
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, log1p=False, inplace=True)
    return adata.obs[["n_genes_by_counts", "total_counts", "pct_counts_mt"]]


def cell_filter(metrics: pd.DataFrame, thresholds: QCThresholds) -> pd.Series:
    """True for cells passing every threshold."""
    keep = metrics["n_genes_by_counts"] >= thresholds.min_genes
    keep &= metrics["total_counts"] >= thresholds.min_counts
    if thresholds.max_genes > 0:
        keep &= metrics["n_genes_by_counts"] <= thresholds.max_genes
    if thresholds.max_pct_mito < 100:
        keep &= metrics["pct_counts_mt"] <= thresholds.max_pct_mito
    return keep


def _plot_qc(metrics: pd.DataFrame, thresholds: QCThresholds, sample: str, violin_path: Path, scatter_path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        ("n_genes_by_counts", "detected genes", [thresholds.min_genes, thresholds.max_genes or None]),
        ("total_counts", "total counts", [thresholds.min_counts or None]),
        ("pct_counts_mt", "% mitochondrial", [thresholds.max_pct_mito if thresholds.max_pct_mito < 100 else None]),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
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
    with atomic_path(violin_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)

    fig, axis = plt.subplots(figsize=(5.5, 4.2))
    points = axis.scatter(
        metrics["total_counts"], metrics["n_genes_by_counts"], c=metrics["pct_counts_mt"], s=4, cmap="viridis", vmin=0
    )
    failed = ~metrics["passed_qc"]
    axis.scatter(metrics.loc[failed, "total_counts"], metrics.loc[failed, "n_genes_by_counts"], s=12, facecolors="none", edgecolors="firebrick", linewidths=0.6, label=f"removed ({int(failed.sum())})")
    fig.colorbar(points, label="% mitochondrial")
    axis.set_xlabel("total counts")
    axis.set_ylabel("detected genes")
    axis.set_title(f"{sample}: {int((~failed).sum())} of {len(metrics)} cells kept")
    axis.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    with atomic_path(scatter_path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def run_qc(
    spec: SampleSpec,
    outdir: str | Path,
    thresholds: QCThresholds = QCThresholds(),
    *,
    class_key: str = _keys.DEFAULT_CLASS_KEY,
    batch_key: str = _keys.DEFAULT_BATCH_KEY,
    unlabeled_category: str = _keys.DEFAULT_UNLABELED_CATEGORY,
) -> dict:
    """QC one sample and write its filtered h5ad, per-cell metrics, summary and plots.

    Returns
    -------
    The summary written to ``<sample>.qc_summary.json``: cells and genes before and after,
    cells removed by each filter, median metrics, thresholds and keys.
    Sets in the written h5ad: ``obs`` columns ``sample``, ``<batch_key>``, ``<class_key>``,
    ``scpermut_role`` and the QC metrics; ``uns["scpermut_qc"]`` (this summary).
    """
    adata = read_counts(spec.path, spec.layer)
    standardise_obs(adata, spec, class_key=class_key, batch_key=batch_key, unlabeled_category=unlabeled_category)
    if not adata.obs_names.is_unique:
        log.warning("%s: %d duplicated cell barcodes made unique", spec.path, adata.obs_names.duplicated().sum())
        adata.obs_names_make_unique()

    metrics = compute_qc_metrics(adata).copy()
    if not adata.var["mt"].any() and thresholds.max_pct_mito < 100:
        log.warning("%s: no mitochondrial gene (names starting with MT-), so the %% mito filter removes nothing", spec.path)
    metrics["passed_qc"] = cell_filter(metrics, thresholds)
    n_cells_before, n_genes_before = adata.shape
    if not metrics["passed_qc"].any():
        raise InputError(
            f"{spec.path}: no cell of sample '{spec.sample}' passes QC ({asdict(thresholds)}); "
            f"median detected genes is {metrics['n_genes_by_counts'].median():.0f}, so lower the thresholds."
        )
    filtered = adata[metrics["passed_qc"].to_numpy()].copy()
    genes_detected = np.asarray((filtered.X > 0).sum(axis=0)).ravel()
    filtered = filtered[:, genes_detected >= thresholds.min_cells].copy()
    if filtered.n_vars == 0:
        raise InputError(f"{spec.path}: no gene of sample '{spec.sample}' is detected in {thresholds.min_cells} cells after QC.")

    removed = {
        "min_genes": int((metrics["n_genes_by_counts"] < thresholds.min_genes).sum()),
        "max_genes": int((metrics["n_genes_by_counts"] > thresholds.max_genes).sum()) if thresholds.max_genes > 0 else 0,
        "min_counts": int((metrics["total_counts"] < thresholds.min_counts).sum()),
        "max_pct_mito": int((metrics["pct_counts_mt"] > thresholds.max_pct_mito).sum()),
    }
    kept = metrics[metrics["passed_qc"]]
    summary = {
        "sample": spec.sample,
        "source": str(spec.path),
        "role": spec.role,
        "n_cells_before": int(n_cells_before),
        "n_cells_after": int(filtered.n_obs),
        "n_genes_before": int(n_genes_before),
        "n_genes_after": int(filtered.n_vars),
        "cells_removed_by": removed,
        "n_labelled": int((filtered.obs[class_key] != unlabeled_category).sum()),
        "median_genes": float(kept["n_genes_by_counts"].median()),
        "median_counts": float(kept["total_counts"].median()),
        "median_pct_mito": float(kept["pct_counts_mt"].median()),
        "n_mito_genes": int(adata.var["mt"].sum()),
        "thresholds": asdict(thresholds),
        "class_key": class_key,
        "batch_key": batch_key,
        "unlabeled_category": unlabeled_category,
    }
    filtered.uns[_keys.QC_UNS] = summary

    paths = qc_outputs(outdir, spec.sample)
    with atomic_path(paths["metrics"]) as tmp:
        metrics.rename_axis("barcode").to_csv(tmp, sep="\t", float_format="%.4g")
    _plot_qc(metrics, thresholds, spec.sample, paths["violin"], paths["scatter"])
    write_json(paths["summary"], summary)
    write_h5ad(filtered, paths["h5ad"])
    return summary
