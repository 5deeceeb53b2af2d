"""Merge QC'd samples into one training-ready AnnData.

Genes are aligned (intersection), counts kept in a layer, expression normalised and
log-transformed, batch-aware highly variable genes selected and labelled reference cells
split into train and validation sets. The matrix stays sparse throughout.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from scpermut import constants
from scpermut._version import __version__
from scpermut.data.align import naming_hint
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.options import check, default

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class PrepareSettings:
    """How samples are merged, normalised and split."""

    n_top_genes: int = default("n_top_genes")
    target_sum: float = default("target_sum")
    min_shared_genes: int = default("min_shared_genes")
    validation_fraction: float = default("validation_fraction")
    calibration_batches: int = default("calibration_batches")
    keep_genes: str = default("keep_genes")
    seed: int = default("seed")

    def __post_init__(self):
        check(asdict(self))


def _role(adata: ad.AnnData) -> str:
    roles = set(adata.obs[constants.ROLE].astype(str)) if constants.ROLE in adata.obs else {"reference"}
    return "reference" if "reference" in roles else "query"


def shared_genes(samples: list[ad.AnnData], names: list[str], min_shared: int) -> tuple[pd.Index, dict[str, int]]:
    """The model's gene universe: genes present in every reference sample (in the first one's order).

    Query samples do not narrow it (their missing genes are zero-filled), but each must share
    at least one gene with it. Returns the genes and, per sample (named by ``names``), how many
    of its genes are dropped (reference and query) or, for a query, how many reference genes it lacks
    (``-n``). When every sample is a query, all samples decide.
    """
    references = [adata for adata in samples if _role(adata) == "reference"] or samples
    shared = references[0].var_names
    for adata in references[1:]:
        shared = shared[shared.isin(adata.var_names)]
    if len(shared) < min_shared:
        details = "; ".join(
            f"'{name}' has {adata.n_vars} genes, e.g. {', '.join(adata.var_names[:3])}"
            for name, adata in zip(names, samples)
            if any(adata is reference for reference in references)
        )
        raise InputError(
            f"the reference samples share only {len(shared)} genes (`min_shared_genes` is {min_shared}): {details}; "
            "check that every file names genes the same way (symbols or Ensembl ids)."
        )
    lost = {}
    for name, adata in zip(names, samples):
        n_present = int(shared.isin(adata.var_names).sum())
        if n_present == 0:
            raise InputError(
                f"sample '{name}' shares no gene with the reference (its genes e.g. {', '.join(adata.var_names[:3])}; "
                f"the reference's e.g. {', '.join(shared[:3])}){naming_hint(shared, adata.var_names, adata.var)}."
            )
        lost[name] = int(adata.n_vars - n_present)
        if n_present < len(shared):
            log.warning(
                "sample %s lacks %d of the reference's %d genes; they are set to 0 for its cells",
                name, len(shared) - n_present, len(shared),
            )
    return shared, lost


def on_genes(adata: ad.AnnData, genes: pd.Index) -> ad.AnnData:
    """``adata`` restricted to ``genes`` in that order; genes it lacks are zero columns."""
    if genes.isin(adata.var_names).all():
        return adata[:, genes]
    positions = adata.var_names.get_indexer(genes)
    present = np.flatnonzero(positions >= 0)
    selector = sp.csr_matrix(
        (np.ones(present.size, np.float32), (positions[present], present)), shape=(adata.n_vars, len(genes))
    )
    matrix = sp.csr_matrix(sp.csr_matrix(adata.X, dtype=np.float32) @ selector, dtype=np.float32)
    return ad.AnnData(X=matrix, obs=adata.obs.copy(), var=pd.DataFrame(index=genes))


def uniform_obs_types(obs: pd.DataFrame) -> list[str]:
    """Cast in place the obs columns holding values of several types (int in one file, str in another) to str.

    Returns the names of the columns cast.
    """
    cast = []
    for column in obs.columns:
        values = obs[column]
        if isinstance(values.dtype, pd.CategoricalDtype):
            mixed = pd.api.types.infer_dtype(values.cat.categories, skipna=True).startswith("mixed")
        elif values.dtype == object:
            mixed = pd.api.types.infer_dtype(values, skipna=True) not in ("string", "empty")
        else:
            continue
        if mixed:
            missing = values.isna().to_numpy()
            text = values.astype(object).where(~missing, None)
            obs[column] = pd.Categorical([None if m else str(v) for v, m in zip(text, missing)])
            cast.append(column)
    return cast


def stratified_split(labels: pd.Series, eligible: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Mark a seeded, per-class fraction of the ``eligible`` cells as validation.

    Every class keeps at least one training cell; a class of one cell has no validation cell.
    """
    rng = np.random.default_rng(seed)
    validation = np.zeros(len(labels), dtype=bool)
    codes = labels.to_numpy()
    for label in sorted(pd.unique(codes[eligible])):
        members = np.flatnonzero(eligible & (codes == label))
        n_validation = min(int(round(fraction * members.size)), members.size - 1)
        if n_validation > 0:
            validation[rng.permutation(members)[:n_validation]] = True
    return validation


def select_hvgs(adata: ad.AnnData, n_top_genes: int, batch_key: str) -> None:
    """Flag batch-aware highly variable genes in ``var`` (all genes when there are fewer than asked).

    They are ranked on the cells that passed QC and hold a count, in the batches that have such
    cells: a cell to annotate that failed QC (an empty droplet, a dead cell) tells little of how
    genes vary, and a batch without a count has no variance to rank (scanpy stops on it).
    """
    import scanpy as sc

    if adata.n_vars <= n_top_genes:
        adata.var["highly_variable"] = True
        return
    ranked = np.asarray(adata.X.sum(axis=1)).ravel() > 0
    if constants.QC_PASS in adata.obs:
        ranked &= adata.obs[constants.QC_PASS].to_numpy(bool)
    if not ranked.any():
        raise InputError("no cell that passed QC has a count on the samples' shared genes.")
    cells = adata
    if not ranked.all():
        obs = pd.DataFrame({batch_key: pd.Categorical(adata.obs[batch_key].to_numpy()[ranked])}, index=adata.obs_names[ranked])
        cells = ad.AnnData(X=adata.X[ranked], obs=obs, var=adata.var)
    n_batches = cells.obs[batch_key].nunique()
    sc.pp.highly_variable_genes(
        cells, n_top_genes=n_top_genes, flavor="seurat", batch_key=batch_key if n_batches > 1 else None
    )
    adata.var = cells.var


def prepare(samples: list[ad.AnnData], keys: Keys = Keys(), settings: PrepareSettings = PrepareSettings()) -> tuple[ad.AnnData, dict]:
    """Merge QC'd samples into one normalised AnnData ready for training and prediction.

    Parameters
    ----------
    samples
        Raw counts with the ``obs`` columns ``sample``, ``scpermut_role``, ``<keys.batch_key>``
        and ``<keys.class_key>`` (as :func:`scpermut.data.qc.filter_sample` writes them).
    keys
        The label and batch columns and the unlabelled category.
    settings
        Normalisation, HVG and split settings.

    Returns
    -------
    The prepared AnnData and a summary. Sets the following fields:
    ``X`` (CSR float32, log1p of library-size-normalised counts), ``layers["counts"]``,
    ``var["highly_variable"]`` (on every shared gene, or on the highly variable ones only with
    ``settings.keep_genes == "hvg"``), ``obs["scpermut_split"]`` (train/validation/unlabelled/query)
    and ``uns["scpermut_prepare"]`` (the keys and settings); ``uns["scpermut_qc"]`` (the
    samples' QC summaries) when the samples carry one.
    """
    import scanpy as sc

    class_key, batch_key = keys.class_key, keys.batch_key
    qc = {adata.uns[constants.QC_UNS]["sample"]: adata.uns[constants.QC_UNS] for adata in samples if constants.QC_UNS in adata.uns}
    names = [adata.uns[constants.QC_UNS]["sample"] if constants.QC_UNS in adata.uns else "AnnData" for adata in samples]
    genes, lost = shared_genes(samples, names, settings.min_shared_genes)
    for name, n_lost in lost.items():
        if n_lost:
            log.info("sample %s: %d of its genes are not among the reference's genes", name, n_lost)

    merged = _merge(samples, genes, keys)
    split = _split(merged.obs, keys, settings)
    merged.obs[constants.SPLIT] = pd.Categorical(split, categories=list(constants.SPLITS))
    labelled = np.isin(split, constants.LABELLED_SPLITS)

    merged.X = sp.csr_matrix(merged.X, dtype=np.float32)
    merged.layers[constants.COUNTS_LAYER] = merged.X.copy()
    sc.pp.normalize_total(merged, target_sum=settings.target_sum)
    sc.pp.log1p(merged)
    merged.uns.pop("log1p", None)
    select_hvgs(merged, settings.n_top_genes, batch_key)
    # Library sizes were summed over these genes: a raw query is normalised over the same ones.
    normalisation_genes = np.asarray(merged.var_names, dtype=str)
    if settings.keep_genes == "hvg":
        merged = merged[:, merged.var["highly_variable"].to_numpy()].copy()

    summary = {
        "n_cells": int(merged.n_obs),
        "n_genes": int(merged.n_vars),
        "n_highly_variable": int(merged.var["highly_variable"].sum()),
        "n_batches": int(merged.obs[batch_key].nunique()),
        "n_classes": int(merged.obs.loc[labelled, class_key].nunique()),
        "cells_per_split": {name: int((split == name).sum()) for name in constants.SPLITS},
        "genes_lost_per_sample": lost,
        "cells_per_sample": {str(k): int(v) for k, v in merged.obs[constants.SAMPLE].value_counts().items()},
    }
    merged.uns[constants.PREPARE_UNS] = {
        **keys.to_dict(),
        **asdict(settings),
        "scpermut_version": __version__,
        "genes_lost_per_sample": lost,
        "normalisation_genes": normalisation_genes,
    }
    if qc:
        merged.uns[constants.QC_UNS] = qc
    return merged, summary


def _merge(samples: list[ad.AnnData], genes: pd.Index, keys: Keys) -> ad.AnnData:
    """The samples on the model's genes in one AnnData, with unique barcodes and uniform obs columns."""
    merged = ad.concat([on_genes(adata, genes) for adata in samples], join="inner", merge="same")
    if constants.QC_PASS not in merged.obs:  # samples that went through no QC (prepare_anndata)
        merged.obs[constants.QC_PASS] = True
    merged.obs[constants.QC_PASS] = merged.obs[constants.QC_PASS].astype(bool)
    for column in uniform_obs_types(merged.obs):
        log.warning("obs column '%s' holds values of different types across the samples; it is written as text", column)
    if not merged.obs_names.is_unique:
        n_duplicated = int(merged.obs_names.duplicated().sum())
        log.warning("%d cell barcodes occur in more than one sample: they are prefixed with the sample id", n_duplicated)
        merged.obs["barcode"] = merged.obs_names.to_numpy()
        merged.obs_names = (merged.obs[constants.SAMPLE].astype(str) + "_" + merged.obs_names.to_series().astype(str)).to_numpy()
    for column in (constants.SAMPLE, keys.batch_key, keys.class_key):
        merged.obs[column] = merged.obs[column].astype(str).astype("category")
    merged.obs[constants.ROLE] = pd.Categorical(merged.obs[constants.ROLE].astype(str), categories=["reference", "query"])
    return merged


def _split(obs: pd.DataFrame, keys: Keys, settings: PrepareSettings) -> np.ndarray:
    """Each cell's split: labelled reference cells to train or validation (stratified, seeded),
    unlabelled reference cells, and query cells."""
    reference = (obs[constants.ROLE] == "reference").to_numpy()
    labelled = reference & (obs[keys.class_key] != keys.unlabeled_category).to_numpy()
    if reference.any() and not labelled.any():
        # Mapping onto a saved model needs no label; training stops on it (naming the same column).
        log.warning(
            "no labelled cell: every reference cell has %s '%s' (check label_col in the samplesheet or `class_key`); "
            "these cells can be mapped onto a saved model (--model), not train one",
            keys.class_key, keys.unlabeled_category,
        )
    labelled &= ~_single_cell_types(obs, labelled, keys)
    calibration = calibration_cells(obs, labelled, keys, settings.calibration_batches)
    labelled &= ~calibration
    validation = stratified_split(obs[keys.class_key], labelled, settings.validation_fraction, settings.seed)
    split = np.where(reference, constants.SPLIT_UNLABELLED, constants.SPLIT_QUERY).astype(object)
    split[labelled] = constants.SPLIT_TRAIN
    split[validation] = constants.SPLIT_VALIDATION
    split[calibration] = constants.SPLIT_CALIBRATION
    return split


def _single_cell_types(obs: pd.DataFrame, labelled: np.ndarray, keys: Keys) -> np.ndarray:
    """The labelled cells whose type has no other labelled cell, warned about by name.

    One cell cannot teach a type (it has no partner to permute with, and its balanced class
    weight would make the classifier call a share of the query that type); it would also leave
    the type without validation cells, which turns early stopping and calibration off for every
    type. Such a cell is annotated like an unlabelled one instead; its label stays in obs.
    """
    labels = obs[keys.class_key].astype(str).to_numpy()
    counts = pd.Series(labels[labelled]).value_counts()
    single = sorted(counts.index[counts == 1])
    if not single:
        return np.zeros(len(obs), dtype=bool)
    cells = labelled & np.isin(labels, single)
    where = ", ".join(f"'{label}' (sample {obs[constants.SAMPLE].to_numpy()[cells & (labels == label)][0]})" for label in single)
    log.warning(
        "cell type(s) %s have a single labelled cell: too few to learn a type from, so they are not classes of the model; "
        "the cell is annotated like an unlabelled one (its label stays in obs['%s'])",
        where, keys.class_key,
    )
    return cells


# A type keeps at least this many labelled cells outside the calibration batches.
MIN_TRAINING_CELLS_PER_TYPE = 10
# Fewer labelled batches than this: no batch is held out (calibration uses the validation cells).
MIN_BATCHES_FOR_CALIBRATION = 3


def calibration_cells(obs: pd.DataFrame, labelled: np.ndarray, keys: Keys, n_batches: int) -> np.ndarray:
    """The labelled cells of ``n_batches`` reference batches held out of training for calibration.

    The batches of median labelled size are taken (not the largest, which trains most; not the
    smallest, too few to calibrate on), and only when at least ``MIN_BATCHES_FOR_CALIBRATION``
    batches are labelled and one stays for training. A cell stays in training when its type would
    keep fewer than ``MIN_TRAINING_CELLS_PER_TYPE`` labelled cells without the held-out batches.
    """
    held_out = np.zeros(len(obs), dtype=bool)
    batches = obs[keys.batch_key].astype(str).to_numpy()
    sizes = pd.Series(batches[labelled]).value_counts()
    if n_batches == 0 or sizes.size < max(MIN_BATCHES_FOR_CALIBRATION, n_batches + 1):
        return held_out
    ordered = sorted(sizes.index, key=lambda name: (sizes[name], name))
    middle = (len(ordered) - n_batches) // 2
    held_out = labelled & np.isin(batches, ordered[middle : middle + n_batches])
    labels = obs[keys.class_key].astype(str).to_numpy()
    remaining = pd.Series(labels[labelled & ~held_out]).value_counts()
    scarce = [label for label in np.unique(labels[held_out]) if remaining.get(label, 0) < MIN_TRAINING_CELLS_PER_TYPE]
    held_out &= ~np.isin(labels, scarce)
    return held_out


def prepare_anndata(
    adata: ad.AnnData,
    *,
    keys: Keys = Keys(),
    query_key: str | None = None,
    layer: str | None = None,
    settings: PrepareSettings = PrepareSettings(),
) -> ad.AnnData:
    """Prepare an in-memory AnnData of raw counts for :meth:`scpermut.Model.fit`, without files.

    The notebook form of ``scpermut qc`` + ``scpermut prepare``, minus the QC filters (filter
    beforehand if needed). Each batch is treated as one sample.

    Parameters
    ----------
    adata
        Raw counts in ``X`` (or in ``layers[layer]``), labels in ``obs[keys.class_key]`` and
        batches in ``obs[keys.batch_key]``.
    keys
        The label and batch columns and the unlabelled category.
    query_key
        Optional boolean ``obs`` column: True marks query cells (annotated, never trained on
        as labelled, their labels kept for scoring only).

    Returns
    -------
    A new prepared AnnData (see :func:`prepare`); ``adata`` is not changed.
    """
    from scpermut.data.io import count_problem

    class_key, batch_key, unlabeled_category = keys.class_key, keys.batch_key, keys.unlabeled_category
    for key in (class_key, batch_key) + ((query_key,) if query_key else ()):
        if key not in adata.obs:
            raise InputError(f"AnnData: column '{key}' does not exist in obs (columns: {', '.join(adata.obs.columns)}).")
    if (n_missing := int(adata.obs[batch_key].isna().sum())) > 0:
        raise InputError(f"AnnData: batch column '{batch_key}' is empty for {n_missing} cells; fill it in or remove those cells.")
    counts = adata.layers[layer] if layer else adata.X
    if (problem := count_problem(counts)) is not None:
        raise InputError(f"AnnData: {'layer ' + repr(layer) if layer else 'X'} holds {problem}, so it is not raw counts.")
    query = adata.obs[query_key].astype(bool).to_numpy() if query_key else np.zeros(adata.n_obs, dtype=bool)
    labels = adata.obs[class_key].astype(object)
    cells = ad.AnnData(X=sp.csr_matrix(counts, dtype=np.float32), obs=adata.obs.copy(), var=pd.DataFrame(index=adata.var_names))
    cells.obs[class_key] = labels.where(labels.notna(), unlabeled_category).astype(str).to_numpy()
    cells.obs[batch_key] = adata.obs[batch_key].astype(str).to_numpy()
    cells.obs[constants.SAMPLE] = cells.obs[batch_key]
    cells.obs[constants.ROLE] = np.where(query, "query", "reference")
    prepared, _ = prepare([cells], keys, settings)
    return prepared
