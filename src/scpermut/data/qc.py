"""Per-sample quality control on AnnData: standard obs columns, cell and gene filters, metrics.

The file step (read, write the filtered h5ad, metrics, summary and plots) is
:func:`scpermut.steps.qc.run_qc`.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import _keys
from scpermut.data.samplesheet import SampleSpec
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.options import check, default

log = logging.getLogger(__name__)

MITO_PREFIXES = ("MT-", "mt-", "Mt-")


@dataclass(frozen=True)
class QCThresholds:
    """Cell and gene filters; 0 for ``max_genes`` and 100 for ``max_pct_mito`` switch them off."""

    min_genes: int = default("min_genes")
    max_genes: int = default("max_genes")
    min_counts: int = default("min_counts")
    max_pct_mito: float = default("max_pct_mito")
    min_cells: int = default("min_cells")

    def __post_init__(self):
        check(asdict(self))


def standardise_obs(adata: ad.AnnData, spec: SampleSpec, keys: Keys) -> None:
    """Write the sample, batch, label and role columns every later step reads, in place."""
    class_key, batch_key, unlabeled_category = keys.class_key, keys.batch_key, keys.unlabeled_category
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

    for value, count in unlabelled_lookalikes(labels, unlabeled_category).items():
        log.warning(
            "%s: %d cells have the label '%s', which looks like 'unlabelled' but is not the unlabelled "
            "category '%s': they are trained as a cell type of their own; set --unlabeled_category '%s' "
            "if they are cells to annotate",
            source, count, value, unlabeled_category, value,
        )

    if batch_key != spec.batch_col and batch_key in adata.obs:
        adata.obs[f"original_{batch_key}"] = adata.obs[batch_key]
    adata.obs[batch_key] = pd.Categorical(batches)
    if class_key != label_col and class_key in adata.obs:
        adata.obs[f"original_{class_key}"] = adata.obs[class_key]
    adata.obs[class_key] = pd.Categorical(labels)
    adata.obs[_keys.SAMPLE] = pd.Categorical([spec.sample] * adata.n_obs)
    adata.obs[_keys.ROLE] = pd.Categorical([spec.role] * adata.n_obs, categories=["reference", "query"])


# Label values that usually mean "no label" (compared lower-case, stripped).
UNLABELLED_LOOKALIKES = ("unassigned", "unknown", "na", "n/a", "nan", "none", "", "unlabelled", "unlabeled", "?")


def unlabelled_lookalikes(labels, unlabeled_category: str) -> dict[str, int]:
    """Label values (and their cell counts) that look like "no label" but are not ``unlabeled_category``."""
    values = pd.Series(np.asarray(labels, dtype=str))
    looks = values.str.strip().str.lower().isin(UNLABELLED_LOOKALIKES) & (values != unlabeled_category)
    return {str(value): int(count) for value, count in values[looks].value_counts().items()}


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


def cells_to_annotate(adata: ad.AnnData, spec: SampleSpec, keys: Keys) -> np.ndarray:
    """True for the cells the user asked to annotate: every query cell, and unlabelled reference cells."""
    if spec.role == "query":
        return np.ones(adata.n_obs, dtype=bool)
    return (adata.obs[keys.class_key].astype(str) == keys.unlabeled_category).to_numpy()


def _failed_text(metrics: pd.DataFrame, thresholds: QCThresholds, among: np.ndarray) -> str:
    """Which filters the cells ``among`` fail, with counts (e.g. "32 below --min_genes 200")."""
    part = metrics[among]
    checks = [
        ("below min_genes", thresholds.min_genes, part["n_genes_by_counts"] < thresholds.min_genes),
        ("below min_counts", thresholds.min_counts, part["total_counts"] < thresholds.min_counts),
    ]
    if thresholds.max_genes > 0:
        checks.append(("above max_genes", thresholds.max_genes, part["n_genes_by_counts"] > thresholds.max_genes))
    if thresholds.max_pct_mito < 100:
        checks.append(("above max_pct_mito", thresholds.max_pct_mito, part["pct_counts_mt"] > thresholds.max_pct_mito))
    return ", ".join(f"{int(mask.sum())} {text} {limit:g}" for text, limit, mask in checks if mask.any())


def filter_sample(adata: ad.AnnData, spec: SampleSpec, thresholds: QCThresholds, keys: Keys) -> tuple[ad.AnnData, pd.DataFrame, dict]:
    """QC one sample's raw counts: standard ``obs`` columns, then the cell and gene filters.

    Returns
    -------
    The filtered AnnData, the per-cell metrics of every input cell (``passed_qc`` column) and
    the summary: cells and genes before and after, cells failing each filter, cells kept though
    failing (``n_cells_flagged``: cells to annotate are never removed), median metrics,
    thresholds and keys. Only labelled reference cells are removed by the cell filters, and
    only reference samples are gene-filtered (``min_cells``). Sets in the filtered AnnData:
    ``obs`` columns ``scpermut_sample``, ``<batch_key>``, ``<class_key>``, ``scpermut_role``,
    ``scpermut_qc_pass`` and the QC metrics;
    ``uns["scpermut_qc"]`` (the summary).
    """
    standardise_obs(adata, spec, keys)
    if not adata.obs_names.is_unique:
        log.warning("%s: %d duplicated cell barcodes made unique", spec.path, adata.obs_names.duplicated().sum())
        adata.obs_names_make_unique()

    metrics = compute_qc_metrics(adata).copy()
    if not adata.var["mt"].any() and thresholds.max_pct_mito < 100:
        log.warning("%s: no mitochondrial gene (names starting with MT-), so the %% mito filter removes nothing", spec.path)
    metrics["passed_qc"] = cell_filter(metrics, thresholds)
    passed = metrics["passed_qc"].to_numpy()
    # QC decides which cells train the model; a cell to annotate is kept and flagged instead.
    to_annotate = cells_to_annotate(adata, spec, keys)
    keep = passed | to_annotate
    n_cells_before, n_genes_before = adata.shape
    if not keep.any():
        raise InputError(
            f"{spec.path}: no cell of sample '{spec.sample}' passes QC ({asdict(thresholds)}); "
            f"median detected genes is {metrics['n_genes_by_counts'].median():.0f}, so lower the thresholds."
        )
    n_flagged = int((to_annotate & ~passed).sum())
    if n_flagged:
        log.warning(
            "%s: %d of the %d cells to annotate in sample '%s' fail QC (%s); they are kept, annotated "
            "and flagged obs['%s'] = False, and do not train the model",
            spec.path, n_flagged, int(to_annotate.sum()), spec.sample, _failed_text(metrics, thresholds, to_annotate), _keys.QC_PASS,
        )
    adata.obs[_keys.QC_PASS] = passed
    filtered = adata[keep].copy()
    if spec.role == "reference":
        # Gene filter on the reference only: a small or sparse query never shrinks the model's genes.
        training = filtered.obs[_keys.QC_PASS].to_numpy(bool)
        genes_detected = np.asarray((filtered.X[training] > 0).sum(axis=0)).ravel()
        filtered = filtered[:, genes_detected >= thresholds.min_cells].copy()
    if filtered.n_vars == 0:
        raise InputError(f"{spec.path}: no gene of sample '{spec.sample}' is detected in {thresholds.min_cells} cells after QC.")

    removed = {
        "min_genes": int((metrics["n_genes_by_counts"] < thresholds.min_genes).sum()),
        "max_genes": int((metrics["n_genes_by_counts"] > thresholds.max_genes).sum()) if thresholds.max_genes > 0 else 0,
        "min_counts": int((metrics["total_counts"] < thresholds.min_counts).sum()),
        "max_pct_mito": int((metrics["pct_counts_mt"] > thresholds.max_pct_mito).sum()),
    }
    kept = metrics[metrics["passed_qc"]] if metrics["passed_qc"].any() else metrics
    summary = {
        "sample": spec.sample,
        "source": str(spec.path),
        "role": spec.role,
        "n_cells_before": int(n_cells_before),
        "n_cells_after": int(filtered.n_obs),
        "n_genes_before": int(n_genes_before),
        "n_genes_after": int(filtered.n_vars),
        "cells_removed_by": removed,
        "n_cells_failed_qc": int((~passed).sum()),
        "n_cells_flagged": n_flagged,
        "n_labelled": int((filtered.obs[keys.class_key] != keys.unlabeled_category).sum()),
        "median_genes": float(kept["n_genes_by_counts"].median()),
        "median_counts": float(kept["total_counts"].median()),
        "median_pct_mito": float(kept["pct_counts_mt"].median()),
        "n_mito_genes": int(adata.var["mt"].sum()),
        "thresholds": asdict(thresholds),
        **keys.to_dict(),
    }
    filtered.uns[_keys.QC_UNS] = summary

    return filtered, metrics, summary
