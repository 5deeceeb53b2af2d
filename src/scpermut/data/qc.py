"""Per-sample quality control on AnnData: standard obs columns, cell and gene filters, metrics.

The file step (read, write the filtered h5ad, metrics, summary and plots) is
:func:`scpermut.steps.qc.run_qc`.
"""

from __future__ import annotations

import difflib
import logging
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import constants
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
            raise InputError(f"{source}: batch column '{spec.batch_col}' does not exist in obs{_columns(adata.obs, spec.batch_col)}.")
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
        raise InputError(f"{source}: label column '{label_col}' does not exist in obs{_columns(adata.obs, label_col)}.")
    else:
        labels = np.full(adata.n_obs, unlabeled_category, dtype=object)

    for value, count in unlabelled_lookalikes(labels, unlabeled_category).items():
        log.warning(
            "%s: %d cells have the label '%s', which looks like 'unlabelled' but is not the unlabelled "
            "category '%s': they are trained as a cell type of their own; set --unlabeled_category '%s' "
            "if they are cells to annotate",
            source, count, value, unlabeled_category, value,
        )

    if keys.condition_key is not None:
        adata.obs[keys.condition_key] = pd.Categorical(_conditions(adata, spec, keys.condition_key))
    elif spec.condition is not None:
        raise InputError(f"{source}: the samplesheet gives sample '{spec.sample}' a condition; name its obs column with `condition_key`.")
    if batch_key != spec.batch_col and batch_key in adata.obs:
        adata.obs[f"original_{batch_key}"] = adata.obs[batch_key]
    adata.obs[batch_key] = pd.Categorical(batches)
    if class_key != label_col and class_key in adata.obs:
        adata.obs[f"original_{class_key}"] = adata.obs[class_key]
    adata.obs[class_key] = pd.Categorical(labels)
    adata.obs[constants.SAMPLE] = pd.Categorical([spec.sample] * adata.n_obs)
    adata.obs[constants.ROLE] = pd.Categorical([spec.role] * adata.n_obs, categories=["reference", "query"])


def _conditions(adata: ad.AnnData, spec: SampleSpec, condition_key: str) -> np.ndarray:
    """Each cell's condition: the sample's from the samplesheet, else the file's ``condition_key`` column."""
    if spec.condition is not None:
        return np.full(adata.n_obs, spec.condition, dtype=object)
    if condition_key not in adata.obs:
        raise InputError(
            f"{spec.path}: condition column '{condition_key}' does not exist in obs{_columns(adata.obs, condition_key)}; "
            "add it, or give the sample's condition in the samplesheet column 'condition'."
        )
    if (n_missing := int(adata.obs[condition_key].isna().sum())) > 0:
        raise InputError(f"{spec.path}: condition column '{condition_key}' is empty for {n_missing} cells; fill it in or remove those cells.")
    return adata.obs[condition_key].astype(str).to_numpy()


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


@dataclass(frozen=True)
class QCRule:
    """One cell filter: cells whose ``metric`` lies below (``minimum``) or above the value of the
    ``threshold`` option fail; the value ``off`` switches the rule off."""

    threshold: str
    metric: str
    minimum: bool
    off: float

    def limit(self, thresholds: QCThresholds) -> float | None:
        """The rule's limit under ``thresholds``, None when it is switched off."""
        value = getattr(thresholds, self.threshold)
        return None if value == self.off else value

    def failing(self, metrics: pd.DataFrame, thresholds: QCThresholds) -> pd.Series:
        """True for the cells this rule fails."""
        limit = self.limit(thresholds)
        if limit is None:
            return pd.Series(False, index=metrics.index)
        return metrics[self.metric] < limit if self.minimum else metrics[self.metric] > limit

    def describe(self, count: int, thresholds: QCThresholds) -> str:
        """E.g. "32 below min_genes 200"."""
        return f"{count} {'below' if self.minimum else 'above'} {self.threshold} {self.limit(thresholds):g}"


# The QC metrics (scanpy's names) and how plots and tables title them.
QC_METRICS = {"n_genes_by_counts": "detected genes", "total_counts": "total counts", "pct_counts_mt": "% mitochondrial"}
# Every cell filter, one rule each: the filter, its failure text, the summary, the plots and the
# report's QC table all read this.
QC_RULES = (
    QCRule("min_genes", "n_genes_by_counts", minimum=True, off=0),
    QCRule("max_genes", "n_genes_by_counts", minimum=False, off=0),
    QCRule("min_counts", "total_counts", minimum=True, off=0),
    QCRule("max_pct_mito", "pct_counts_mt", minimum=False, off=100),
)


def cell_filter(metrics: pd.DataFrame, thresholds: QCThresholds) -> pd.Series:
    """True for cells passing every threshold."""
    keep = pd.Series(True, index=metrics.index)
    for rule in QC_RULES:
        keep &= ~rule.failing(metrics, thresholds)
    return keep


def cells_to_annotate(adata: ad.AnnData, spec: SampleSpec, keys: Keys) -> np.ndarray:
    """True for the cells the user asked to annotate: every query cell, and unlabelled reference cells."""
    if spec.role == "query":
        return np.ones(adata.n_obs, dtype=bool)
    return (adata.obs[keys.class_key].astype(str) == keys.unlabeled_category).to_numpy()


def _failed_text(metrics: pd.DataFrame, thresholds: QCThresholds, among: np.ndarray) -> str:
    """Which filters the cells ``among`` fail, with counts (e.g. "32 below min_genes 200")."""
    part = metrics[among]
    counts = [(rule, int(rule.failing(part, thresholds).sum())) for rule in QC_RULES]
    return ", ".join(rule.describe(count, thresholds) for rule, count in counts if count)


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
            spec.path, n_flagged, int(to_annotate.sum()), spec.sample, _failed_text(metrics, thresholds, to_annotate), constants.QC_PASS,
        )
    adata.obs[constants.QC_PASS] = passed
    filtered = _filter_genes(adata[keep].copy(), spec, thresholds)
    summary = {
        "sample": spec.sample,
        "source": str(spec.path),
        "role": spec.role,
        "n_cells_before": int(n_cells_before),
        "n_cells_after": int(filtered.n_obs),
        "n_genes_before": int(n_genes_before),
        "n_genes_after": int(filtered.n_vars),
        "n_cells_flagged": n_flagged,
        "n_labelled": int((filtered.obs[keys.class_key] != keys.unlabeled_category).sum()),
        "n_mito_genes": int(adata.var["mt"].sum()),
        **_metric_summary(metrics, thresholds),
        **keys.to_dict(),
    }
    filtered.uns[constants.QC_UNS] = summary

    return filtered, metrics, summary


def _filter_genes(filtered: ad.AnnData, spec: SampleSpec, thresholds: QCThresholds) -> ad.AnnData:
    """Drop reference genes detected in fewer than ``min_cells`` training cells.

    The reference only: a small or sparse query never shrinks the model's genes.
    """
    if spec.role == "reference":
        training = filtered.obs[constants.QC_PASS].to_numpy(bool)
        genes_detected = np.asarray((filtered.X[training] > 0).sum(axis=0)).ravel()
        filtered = filtered[:, genes_detected >= thresholds.min_cells].copy()
    if filtered.n_vars == 0:
        raise InputError(f"{spec.path}: no gene of sample '{spec.sample}' is detected in {thresholds.min_cells} cells after QC.")
    return filtered


def _metric_summary(metrics: pd.DataFrame, thresholds: QCThresholds) -> dict:
    """Cells failing each rule, cells failing any, and the median metrics of the cells that pass."""
    kept = metrics[metrics["passed_qc"]] if metrics["passed_qc"].any() else metrics
    return {
        "cells_removed_by": {rule.threshold: int(rule.failing(metrics, thresholds).sum()) for rule in QC_RULES},
        "n_cells_failed_qc": int((~metrics["passed_qc"]).sum()),
        "median_genes": float(kept["n_genes_by_counts"].median()),
        "median_counts": float(kept["total_counts"].median()),
        "median_pct_mito": float(kept["pct_counts_mt"].median()),
        "thresholds": asdict(thresholds),
    }


def _columns(obs: pd.DataFrame, wanted: str) -> str:
    """`` (did you mean 'cell_type'?; columns: ...)``: the closest obs column to a missing one, and all of them."""
    close = difflib.get_close_matches(wanted, [str(column) for column in obs.columns], n=1, cutoff=0.6)
    hint = f"did you mean '{close[0]}'?; " if close else ""
    return f" ({hint}columns: {', '.join(map(str, obs.columns))})"
