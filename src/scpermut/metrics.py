"""Evaluation of an annotated AnnData: label-transfer scores and integration scores of the latent.

Which cells are scored
----------------------
Label transfer is scored only on cells whose true label is known and that the classifier
never trained on: ``obs["scpermut_split"] == "query"`` (labelled query cells, the main
evaluation set) and ``"validation"`` (labelled reference cells held out for early stopping,
slightly optimistic because they chose the stopping epoch). ``"train"`` cells are never
scored and ``"unlabelled"`` cells have no label to score against. A file without a split
column (a new query annotated by ``scpermut predict``) is scored as a query. The headline
set is ``query`` when it has labelled cells, otherwise ``validation``.

Integration scores use every cell with a latent (reference and query), on a seeded sample
when the data are large; the result says whether and how much it sampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn import metrics as skm
from sklearn.neighbors import NearestNeighbors

from scpermut import constants
from scpermut.options import default

HEADLINE_SETS = (constants.SPLIT_QUERY, constants.SPLIT_VALIDATION)

# Rarity of a class = its share of the evaluated cells; bounds are [low, high).
RARITY_GROUPS = (
    ("rare (<1%)", 0.0, 0.01),
    ("uncommon (1-10%)", 0.01, 0.10),
    ("common (>=10%)", 0.10, np.inf),
)


@dataclass(frozen=True)
class MetricSettings:
    """How the latent-space scores are computed.

    Parameters
    ----------
    n_neighbors
        Neighbours per cell for the batch-entropy score.
    max_cells_neighbors
        Cells used for the neighbour graph; larger data are sampled (seeded).
    max_cells_silhouette
        Cells used for silhouettes, which are quadratic in the number of cells.
    seed
        Seed of every sample drawn.
    """

    n_neighbors: int = 30
    max_cells_neighbors: int = 20_000
    max_cells_silhouette: int = 5_000
    seed: int = default("seed")


def classification_scores(y_true, y_pred, unknown: str = default("unlabeled_category")) -> dict:
    """Headline scores of predicted against true labels.

    A cell predicted ``unknown`` counts as wrong. Balanced accuracy and macro F1 average over
    the classes present in ``y_true``, so a predicted-only class (such as ``unknown``) lowers
    precision but adds no class of its own.

    Returns
    -------
    dict
        ``n_cells``, ``n_classes``, ``accuracy``, ``balanced_accuracy`` (mean recall),
        ``macro_f1``, ``mcc``, ``cohen_kappa``, ``ari``, ``nmi``, ``fraction_unknown``.
    """
    fraction_unknown = (
        float(np.mean(np.asarray(y_pred, dtype=str) == unknown)) if len(y_pred) else 0.0
    )
    y_true, y_pred, _ = _as_codes(y_true, y_pred)
    true_classes = np.unique(y_true)
    recall = skm.recall_score(y_true, y_pred, labels=true_classes, average=None, zero_division=0)
    return {
        "n_cells": int(y_true.size),
        "n_classes": int(true_classes.size),
        "accuracy": float(np.mean(y_true == y_pred)),
        "balanced_accuracy": float(np.mean(recall)),
        "macro_f1": float(
            skm.f1_score(y_true, y_pred, labels=true_classes, average="macro", zero_division=0)
        ),
        "mcc": float(skm.matthews_corrcoef(y_true, y_pred)),
        "cohen_kappa": _kappa(y_true, y_pred),
        "ari": float(skm.adjusted_rand_score(y_true, y_pred)),
        "nmi": float(skm.normalized_mutual_info_score(y_true, y_pred)),
        "fraction_unknown": fraction_unknown,
    }


def per_class_scores(y_true, y_pred) -> pd.DataFrame:
    """Precision, recall and F1 of every true class, with its size and rarity group.

    Returns
    -------
    DataFrame
        One row per class in ``y_true`` (largest first): ``class``, ``n_cells``, ``fraction``,
        ``rarity``, ``precision``, ``recall``, ``f1``.
    """
    y_true, y_pred, vocabulary = _as_codes(y_true, y_pred)
    classes, sizes = np.unique(y_true, return_counts=True)
    precision, recall, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, zero_division=0
    )
    fraction = sizes / sizes.sum()
    table = pd.DataFrame(
        {
            "class": vocabulary[classes],
            "n_cells": sizes.astype(int),
            "fraction": fraction,
            "rarity": [rarity_group(value) for value in fraction],
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    )
    return table.sort_values(["n_cells", "class"], ascending=[False, True], ignore_index=True)


def rarity_group(fraction: float) -> str:
    """Name of the rarity group a class with this share of cells falls into."""
    for name, low, high in RARITY_GROUPS:
        if low <= fraction < high:
            return name
    raise ValueError(f"class fraction {fraction} is outside [0, 1]")


def rarity_scores(per_class: pd.DataFrame) -> pd.DataFrame:
    """Mean per-class scores within each rarity group (groups without classes are left out).

    Returns
    -------
    DataFrame
        ``rarity``, ``n_classes``, ``n_cells``, ``macro_f1``, ``mean_recall``, ``mean_precision``.
    """
    rows = []
    for name, _, _ in RARITY_GROUPS:
        group = per_class[per_class["rarity"] == name]
        if len(group):
            rows.append(
                {
                    "rarity": name,
                    "n_classes": int(len(group)),
                    "n_cells": int(group["n_cells"].sum()),
                    "macro_f1": float(group["f1"].mean()),
                    "mean_recall": float(group["recall"].mean()),
                    "mean_precision": float(group["precision"].mean()),
                }
            )
    return pd.DataFrame(
        rows,
        columns=["rarity", "n_classes", "n_cells", "macro_f1", "mean_recall", "mean_precision"],
    )


def confusion_table(y_true, y_pred, normalise: bool = True) -> pd.DataFrame:
    """Confusion matrix: rows are true classes, columns the true classes then predicted-only ones.

    With ``normalise`` each row sums to 1 (the share of a true class given each prediction).
    """
    y_true = pd.Series(np.asarray(y_true, dtype=str))
    y_pred = pd.Series(np.asarray(y_pred, dtype=str))
    rows = sorted(y_true.unique())
    columns = rows + sorted(set(y_pred.unique()) - set(rows))
    table = pd.crosstab(pd.Categorical(y_true, rows), pd.Categorical(y_pred, columns), dropna=False)
    table = table.reindex(index=rows, columns=columns, fill_value=0)
    table.index.name, table.columns.name = "true", "predicted"
    if normalise:
        table = table.div(table.sum(axis=1).replace(0, 1), axis=0)
    return table


def batch_mixing(latent, batches, settings: MetricSettings = MetricSettings()) -> dict:
    """How well batches mix among each cell's nearest neighbours in the latent.

    For each cell, the entropy of the batches of its ``n_neighbors`` nearest neighbours,
    divided by the entropy of the batch proportions of all cells scored: 1 means every
    neighbourhood is as mixed as the whole data set, 0 means each cell only sees its own batch.

    Returns
    -------
    dict
        ``batch_entropy`` (mean normalised entropy, or None with one batch), ``n_neighbors``,
        ``n_cells`` scored, ``n_cells_total``, ``sampled``.
    """
    latent = np.asarray(latent, dtype=np.float32)
    batch_codes = pd.Categorical(np.asarray(batches, dtype=str)).codes
    index, sampled = _sample(latent.shape[0], settings.max_cells_neighbors, settings.seed)
    latent, batch_codes = latent[index], batch_codes[index]
    result = {"n_cells": int(index.size), "n_cells_total": int(len(batches)), "sampled": sampled}
    n_batches = int(batch_codes.max()) + 1 if batch_codes.size else 0
    global_entropy = _entropy(np.bincount(batch_codes, minlength=n_batches)[None, :])[0]
    n_neighbors = min(settings.n_neighbors, latent.shape[0] - 1)
    if global_entropy <= 0 or n_neighbors < 1:
        return {**result, "batch_entropy": None, "n_neighbors": n_neighbors}
    finder = NearestNeighbors(n_neighbors=n_neighbors + 1).fit(latent)
    neighbours = finder.kneighbors(latent, return_distance=False)[:, 1:]  # drop the cell itself
    counts = np.zeros((latent.shape[0], n_batches))
    np.add.at(
        counts,
        (np.repeat(np.arange(latent.shape[0]), n_neighbors), batch_codes[neighbours].ravel()),
        1,
    )
    score = float(np.mean(_entropy(counts)) / global_entropy)
    return {**result, "batch_entropy": score, "n_neighbors": n_neighbors}


def batch_silhouette(latent, batches, labels, settings: MetricSettings = MetricSettings()) -> dict:
    """How much batches overlap within each cell type (scIB convention), on a seeded sample.

    Within each label, ``1 - |silhouette|`` of the batches, averaged per label, then over
    labels: 1 means batches overlap, 0 means they separate. Cells whose label is missing
    (None or NaN) are left out, and labels seen in a single batch are skipped.

    Returns
    -------
    dict
        ``value`` (None when no label spans two batches), ``n_cells`` scored, ``n_cells_total``, ``sampled``.
    """
    latent, batches, labels, result = _known_sample(latent, batches, labels, settings)
    per_label = []
    for label in np.unique(labels):
        members = labels == label
        if 1 < np.unique(batches[members]).size < members.sum():
            per_label.append(
                np.mean(1 - np.abs(skm.silhouette_samples(latent[members], batches[members])))
            )
    return {"value": float(np.mean(per_label)) if per_label else None, **result}


def label_silhouette(latent, labels, settings: MetricSettings = MetricSettings()) -> dict:
    """How well cell types stay apart: the silhouette of the labels rescaled to ``(s + 1) / 2``.

    Cells whose label is missing (None or NaN) are left out; a seeded sample is drawn on large data.

    Returns
    -------
    dict
        ``value`` (None with fewer than two labels), ``n_cells`` scored, ``n_cells_total``, ``sampled``.
    """
    latent, _, labels, result = _known_sample(latent, np.zeros(len(labels)), labels, settings)
    value = None
    if 1 < np.unique(labels).size < labels.size:
        value = float((skm.silhouette_score(latent, labels) + 1) / 2)
    return {"value": value, **result}


def _known_sample(latent, batches, labels, settings: MetricSettings):
    """Cells with a label, sampled down to ``max_cells_silhouette``, as arrays, plus a record of the sampling."""
    labels = pd.Series(np.asarray(labels, dtype=object))
    known = np.flatnonzero(labels.notna().to_numpy())
    chosen, sampled = _sample(known.size, settings.max_cells_silhouette, settings.seed)
    index = known[chosen]
    record = {"n_cells": int(index.size), "n_cells_total": int(known.size), "sampled": sampled}
    return (
        np.asarray(latent, dtype=np.float32)[index],
        np.asarray(batches, dtype=object)[index].astype(str),
        labels.to_numpy()[index].astype(str),
        record,
    )


def evaluate(
    adata,
    class_key: str = default("class_key"),
    batch_key: str = default("batch_key"),
    unlabeled_category: str = default("unlabeled_category"),
    condition_key: str | None = default("condition_key"),
    settings: MetricSettings = MetricSettings(),
) -> dict:
    """Score an annotated AnnData (the output of ``scpermut predict``).

    ``condition_key`` (an obs column of biological conditions, or None) is recorded in the
    settings.

    Returns
    -------
    dict
        JSON-ready: ``evaluation_set`` (the headline set: ``query``, ``validation`` or None
        when no scored cell has a label), ``sets`` (per set: ``scores`` from
        :func:`classification_scores`, ``per_class`` and ``by_rarity`` as lists of records),
        ``annotated`` (see :func:`annotated_cells`; None without a classifier),
        ``predictions`` (counts of every predicted class and of ``unknown`` predictions over
        all cells; None, like ``sets``, for a model without a classifier), ``latent`` (:func:`batch_mixing`, :func:`batch_silhouette` and :func:`label_silhouette` results, or None
        without a latent) and ``settings``.
    """
    has_predictions = constants.PREDICTION in adata.obs  # a model trained with --no-classifier has none
    predictions = adata.obs[constants.PREDICTION].astype(str).to_numpy() if has_predictions else None
    truth = known_labels(adata, class_key, unlabeled_category)
    split = (
        adata.obs[constants.SPLIT].astype(str).to_numpy()
        if constants.SPLIT in adata.obs
        else np.full(adata.n_obs, constants.SPLIT_QUERY, dtype=object)
    )

    sets = _set_scores(truth, predictions, split, unlabeled_category) if has_predictions else {}
    latent = None
    if constants.LATENT in adata.obsm:
        latent = _latent_scores(adata, truth, predictions, batch_key, unlabeled_category, settings)

    return {
        "evaluation_set": next((name for name in HEADLINE_SETS if name in sets), None),
        "sets": sets,
        "annotated": annotated_cells(adata, truth, predictions, split, batch_key) if has_predictions else None,
        "predictions": _prediction_counts(adata, predictions, unlabeled_category)
        if has_predictions
        else None,
        "latent": latent,
        "settings": {
            **settings.__dict__,
            "class_key": class_key,
            "batch_key": batch_key,
            "unlabeled_category": unlabeled_category,
            "condition_key": condition_key or "",
        },
    }


def _set_scores(truth: pd.Series, predictions: np.ndarray, split: np.ndarray, unlabeled_category: str) -> dict:
    """Scores, per-class scores and rarity groups of each headline set with labelled cells."""
    sets = {}
    for name in HEADLINE_SETS:
        scored = (split == name) & truth.notna().to_numpy()
        if scored.any():
            y_true, y_pred = truth.to_numpy()[scored].astype(str), predictions[scored]
            per_class = per_class_scores(y_true, y_pred)
            sets[name] = {
                "scores": classification_scores(y_true, y_pred, unknown=unlabeled_category),
                "per_class": per_class.to_dict(orient="records"),
                "by_rarity": rarity_scores(per_class).to_dict(orient="records"),
            }
    return sets


def _latent_scores(adata, truth: pd.Series, predictions, batch_key: str, unlabeled_category: str, settings: MetricSettings) -> dict:
    """Batch mixing, batch silhouette and label silhouette of ``obsm["X_scpermut"]``."""
    embedding = np.asarray(adata.obsm[constants.LATENT])
    # Without a batch column every cell is one batch, and the batch scores come out undefined (None).
    batches = adata.obs[batch_key].astype(str).to_numpy() if batch_key in adata.obs else np.zeros(adata.n_obs, dtype=str)
    # Batch silhouette needs a cell type for every cell: the true one where known, else the predicted one.
    structure = truth
    if predictions is not None:
        structure = truth.where(truth.notna(), pd.Series(predictions, index=truth.index))
        structure = structure.where(structure != unlabeled_category)
    return {
        "batch_mixing": batch_mixing(embedding, batches, settings),
        "batch_silhouette": batch_silhouette(embedding, batches, structure, settings),
        "label_silhouette": label_silhouette(embedding, truth, settings),
    }


# Quantiles of the confidence of the annotated cells that summaries show.
CONFIDENCE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def annotated_cells(adata, truth: pd.Series, predictions: np.ndarray, split: np.ndarray, batch_key: str) -> dict:
    """What a user asked for: the cells to annotate (query and unlabelled reference cells).

    Returns
    -------
    dict
        ``n_cells``, ``n_failed_qc`` (annotated though failing QC), ``composition`` (cells per
        predicted type, most first), ``confidence`` (mean, quantiles, share below 0.5) and
        ``per_batch`` (per batch: cells, and where true labels are known, ``n_labelled``,
        ``accuracy`` and ``balanced_accuracy``).
    """
    chosen = np.isin(split, [constants.SPLIT_QUERY, constants.SPLIT_UNLABELLED])
    result = {"n_cells": int(chosen.sum()), "n_failed_qc": 0, "composition": {}, "confidence": None, "per_batch": {}}
    if not chosen.any():
        return result
    if constants.QC_PASS in adata.obs:
        result["n_failed_qc"] = int((~adata.obs[constants.QC_PASS].to_numpy(bool) & chosen).sum())
    chosen_predictions = predictions[chosen]
    result["composition"] = {str(k): int(v) for k, v in pd.Series(chosen_predictions).value_counts().items()}
    if constants.CONFIDENCE in adata.obs:
        confidence = adata.obs[constants.CONFIDENCE].to_numpy(dtype=float)[chosen]
        result["confidence"] = {
            "mean": float(confidence.mean()),
            **{f"q{int(q * 100)}": float(np.quantile(confidence, q)) for q in CONFIDENCE_QUANTILES},
            "fraction_below_0.5": float(np.mean(confidence < 0.5)),
        }
    batches = adata.obs[batch_key].astype(str).to_numpy() if batch_key in adata.obs else np.full(adata.n_obs, "all")
    known = truth.notna().to_numpy()
    for batch in sorted(set(batches[chosen])):
        cells = chosen & (batches == batch)
        entry = {"n_cells": int(cells.sum())}
        labelled = cells & known
        if labelled.any():
            y_true = truth.to_numpy()[labelled].astype(str)
            y_pred = predictions[labelled]
            entry.update(
                n_labelled=int(labelled.sum()),
                accuracy=float(np.mean(y_true == y_pred)),
                balanced_accuracy=float(
                    np.mean([np.mean(y_pred[y_true == label] == label) for label in np.unique(y_true)])
                ),
            )
        result["per_batch"][batch] = entry
    return result


def _prediction_counts(adata, predictions: np.ndarray, unlabeled_category: str) -> dict:
    unknown = predictions == unlabeled_category
    confidence = adata.obs[constants.CONFIDENCE] if constants.CONFIDENCE in adata.obs else None
    return {
        "n_cells": int(adata.n_obs),
        "counts": pd.Series(predictions).value_counts().astype(int).to_dict(),
        "n_unknown": int(unknown.sum()),
        "fraction_unknown": float(unknown.mean()) if adata.n_obs else 0.0,
        "mean_confidence": float(np.mean(confidence)) if confidence is not None else None,
    }


# The agreement scores of label_transfer_scores, in the order tables show them.
LABEL_SCORES = ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "cohen_kappa", "ari", "nmi")


def headline(result: dict) -> dict:
    """The few numbers worth a glance: label-transfer scores of the headline set and integration scores."""
    scores = result["sets"].get(result["evaluation_set"], {}).get("scores", {})
    latent = result["latent"] or {}
    values = {
        "evaluation_set": result["evaluation_set"],
        "n_cells_evaluated": scores.get("n_cells"),
        **{
            name: scores.get(name)
            for name in LABEL_SCORES
        },
        "fraction_unknown": (result["predictions"] or {}).get("fraction_unknown"),
        "n_cells_annotated": (result.get("annotated") or {}).get("n_cells"),
        "n_annotated_failed_qc": (result.get("annotated") or {}).get("n_failed_qc"),
        "annotated_mean_confidence": ((result.get("annotated") or {}).get("confidence") or {}).get("mean"),
        "batch_entropy": latent.get("batch_mixing", {}).get("batch_entropy"),
        "batch_silhouette": latent.get("batch_silhouette", {}).get("value"),
        "label_silhouette": latent.get("label_silhouette", {}).get("value"),
    }
    return values


def known_labels(adata, class_key: str, unlabeled_category: str) -> pd.Series:
    """The true label of every cell as strings, NaN where unknown (absent, empty or ``unlabeled_category``)."""
    if class_key not in adata.obs:
        return pd.Series(np.nan, index=adata.obs_names, dtype=object)
    labels = adata.obs[class_key].astype(object)
    return labels.where(
        labels.notna() & (labels.astype(str) != unlabeled_category) & (labels.astype(str) != "")
    )


def _as_codes(y_true, y_pred) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Integer codes of true and predicted labels over their shared, sorted vocabulary (fast on 100k cells)."""
    y_true = np.asarray(y_true, dtype=str)
    y_pred = np.asarray(y_pred, dtype=str)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{y_true.size} true labels but {y_pred.size} predictions")
    vocabulary = np.union1d(y_true, y_pred)
    return np.searchsorted(vocabulary, y_true), np.searchsorted(vocabulary, y_pred), vocabulary


def _kappa(y_true, y_pred) -> float:
    # sklearn returns NaN (with a warning) when both sides hold a single identical class.
    if np.unique(y_true).size == 1 and np.array_equal(np.asarray(y_true), np.asarray(y_pred)):
        return 1.0
    return float(skm.cohen_kappa_score(np.asarray(y_true), np.asarray(y_pred)))


def _entropy(counts: np.ndarray) -> np.ndarray:
    """Shannon entropy (nats) of each row of a count matrix."""
    totals = counts.sum(axis=1, keepdims=True)
    shares = np.divide(counts, totals, out=np.zeros_like(counts, dtype=float), where=totals > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(shares > 0, shares * np.log(shares), 0.0)
    return -terms.sum(axis=1)


def _sample(n: int, max_n: int, seed: int) -> tuple[np.ndarray, bool]:
    """Sorted indices of a seeded sample of at most ``max_n`` of ``n`` items, and whether it sampled."""
    if n <= max_n:
        return np.arange(n), False
    return np.sort(np.random.default_rng(seed).choice(n, size=max_n, replace=False)), True
