"""What the report computes before it renders: marker genes, the samples' QC summaries, the long
metrics table, flat records and the time stamp."""

from __future__ import annotations

import datetime

import anndata as ad
import numpy as np
import pandas as pd

from scpermut import constants, metrics

# Markers per reference type, and at most this many labelled reference cells to rank them on.
MARKERS_PER_TYPE = 3
MAX_MARKER_CELLS = 5_000
# var columns holding gene symbols, in the order they are looked for (scanpy, CELLxGENE, 10x, Seurat exports).
SYMBOL_COLUMNS = ("gene_symbols", "gene_symbol", "symbol", "symbols", "feature_name", "gene_name", "gene_names", "name")


def marker_genes(adata, keys, seed: int) -> dict[str, list[str]]:
    """Top marker genes of each reference cell type (Wilcoxon rank sums on the labelled reference cells).

    Empty when there are fewer than two labelled types, or no labelled reference cell.
    """
    import scanpy as sc

    if constants.SPLIT not in adata.obs or keys.class_key not in adata.obs:
        return {}
    labelled = adata.obs[constants.SPLIT].astype(str).isin([constants.SPLIT_TRAIN, constants.SPLIT_VALIDATION]).to_numpy()
    cells = np.flatnonzero(labelled)
    if cells.size > MAX_MARKER_CELLS:
        cells = np.sort(np.random.default_rng(seed).choice(cells, MAX_MARKER_CELLS, replace=False))
    reference = ad.AnnData(X=adata.X[cells], obs=pd.DataFrame(index=adata.obs_names[cells]), var=pd.DataFrame(index=adata.var_names))
    reference.obs["type"] = pd.Categorical(adata.obs[keys.class_key].astype(str).to_numpy()[cells])
    counts = reference.obs["type"].value_counts()
    types = sorted(str(name) for name in counts.index[counts >= 2])
    if len(types) < 2:
        return {}
    reference = reference[reference.obs["type"].isin(types)].copy()
    sc.tl.rank_genes_groups(reference, "type", method="wilcoxon", n_genes=MARKERS_PER_TYPE, use_raw=False)
    names = reference.uns["rank_genes_groups"]["names"]
    return {name: [str(gene) for gene in names[name]] for name in names.dtype.names}

def readable_gene_names(var: pd.DataFrame) -> pd.Series:
    """A display name per gene: a symbol column of ``var`` when there is one, else the var name
    with an Ensembl suffix (``CD3E_ENSG00000198851``) or prefix (``ENSG00000198851_CD3E``) cut off."""
    for column in SYMBOL_COLUMNS:
        if column in var:
            symbols = var[column].astype(object)
            return pd.Series(np.where(symbols.isna() | (symbols.astype(str) == ""), var.index, symbols.astype(str)), index=var.index)
    names = var.index.to_series().astype(str)
    return names.str.replace(r"[_|]ENS[A-Z]*G\d{6,}(\.\d+)?$", "", regex=True).str.replace(r"^ENS[A-Z]*G\d{6,}(\.\d+)?[_|]", "", regex=True)


def qc_summaries(adata) -> dict:
    """Return the per-sample QC summaries of ``uns["scpermut_qc"]``, keyed by sample id."""
    qc = adata.uns.get(constants.QC_UNS) or {}
    # `scpermut prepare` stores {sample: summary}; a single `scpermut qc` output stores the summary itself.
    if "sample" in qc and not isinstance(qc["sample"], dict):
        return {str(qc["sample"]): qc}
    return {str(sample): summary for sample, summary in qc.items() if isinstance(summary, dict)}

def flatten(record: dict, prefix: str = "") -> dict:
    """Nested mappings as ``a.b`` keys; long lists summarised by their length."""
    flat = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
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
