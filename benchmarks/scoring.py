"""Score one method's output on one split with ``scpermut.metrics``, the same way for every method."""

from __future__ import annotations

import numpy as np
import pandas as pd
from common import BATCH, EVALUATED, LABEL, TRUTH, UNKNOWN


def reference_rarity(split) -> dict[str, str]:
    """Rarity group of each type by its share of the labelled reference cells (what the model learns from)."""
    from scpermut.metrics import rarity_group

    labels = split.obs[LABEL].astype(str)
    shares = labels[labels != UNKNOWN].value_counts(normalize=True)
    return {label: rarity_group(share) for label, share in shares.items()}


# scib-metrics' convention for LISI (its Benchmarker): 90 neighbours, perplexity 30.
LISI_NEIGHBOURS = 90


def ilisi(latent: np.ndarray, batches: np.ndarray, n_neighbors: int = LISI_NEIGHBOURS) -> float:
    """iLISI of ``latent`` scaled 0-1 (scib-metrics ``ilisi_knn``): 1 = every neighbourhood holds all batches evenly.

    Exact neighbours (scikit-learn), the cell itself included as scib-metrics expects.
    """
    from scib_metrics import ilisi_knn
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float32)
    k = min(n_neighbors, latent.shape[0])
    distances, indices = NearestNeighbors(n_neighbors=k).fit(latent).kneighbors(latent)
    return float(ilisi_knn(NeighborsResults(indices=indices, distances=distances), np.asarray(batches), scale=True))


def score(split, labels: np.ndarray, latent: np.ndarray | None) -> dict:
    """Label-transfer scores on the evaluated cells and integration scores of the latent on all cells.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``macro_f1``, ``accuracy``, ``mcc``, ``n_evaluated``; one
        ``f1_<rarity>`` per reference-rarity group present; ``rare_type_f1`` on the rare-type
        task; ``batch_entropy``, ``ilisi`` (scaled 0-1), ``batch_silhouette``, ``label_silhouette`` when there is a latent.
    """
    from scpermut import metrics

    evaluated = split.obs[EVALUATED].to_numpy(bool)
    truth = split.obs[TRUTH].astype(str).to_numpy()
    y_true, y_pred = truth[evaluated], np.asarray(labels, dtype=str)[evaluated]
    scores = metrics.classification_scores(y_true, y_pred, unknown=UNKNOWN)
    row = {name: scores[name] for name in ("balanced_accuracy", "macro_f1", "accuracy", "mcc", "fraction_unknown")}
    row["n_evaluated"] = int(evaluated.sum())

    per_class = metrics.per_class_scores(y_true, y_pred).set_index("class")
    rarity = reference_rarity(split)
    groups = pd.Series({label: rarity.get(label, "absent") for label in per_class.index})
    for group, members in groups.groupby(groups):
        row[f"f1 {group}"] = float(per_class.loc[members.index, "f1"].mean())
    if "bench_rare" in split.uns:
        rare = split.uns["bench_rare"]["type"]
        row["rare_type"] = rare
        row["rare_type_f1"] = float(per_class.loc[rare, "f1"]) if rare in per_class.index else 0.0
        row["rare_type_recall"] = float(per_class.loc[rare, "recall"]) if rare in per_class.index else 0.0

    if latent is not None:
        batches = split.obs[BATCH].astype(str).to_numpy()
        mixing = metrics.batch_mixing(latent, batches)
        row["batch_entropy"] = mixing["batch_entropy"]
        row["ilisi"] = ilisi(latent, batches)
        row["batch_silhouette"] = metrics.batch_silhouette(latent, batches, truth)["value"]
        row["label_silhouette"] = metrics.label_silhouette(latent, truth)["value"]
    return row
