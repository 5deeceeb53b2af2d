"""Score one method's output on one split with ``scpermut.metrics``, the same way for every method.

Also: rejection of types the reference lacks (:func:`novelty_scores`) and scib-metrics'
``Benchmarker`` aggregates of every embedding (:func:`benchmarker_scores`, cached by content).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
from common import BATCH, EVALUATED, LABEL, ROLE, TRUTH, UNKNOWN


def reference_rarity(split) -> dict[str, str]:
    """Rarity group of each type by its share of the labelled reference cells (what the model learns from)."""
    from scpermut.metrics import rarity_group

    labels = split.obs[LABEL].astype(str)
    shares = labels[labels != UNKNOWN].value_counts(normalize=True)
    return {label: rarity_group(share) for label, share in shares.items()}


# scib-metrics' convention for LISI (its Benchmarker): 90 neighbours, perplexity 30.
LISI_NEIGHBOURS = 90


def exact_neighbours(latent: np.ndarray, n_neighbors: int):
    """scib-metrics ``NeighborsResults`` of exact neighbours (scikit-learn), the cell itself included as scib-metrics expects."""
    from scib_metrics.nearest_neighbors import NeighborsResults
    from sklearn.neighbors import NearestNeighbors

    latent = np.asarray(latent, dtype=np.float32)
    distances, indices = NearestNeighbors(n_neighbors=min(n_neighbors, latent.shape[0])).fit(latent).kneighbors(latent)
    return NeighborsResults(indices=indices, distances=distances)


def ilisi(latent: np.ndarray, batches: np.ndarray, n_neighbors: int = LISI_NEIGHBOURS) -> float:
    """iLISI of ``latent`` scaled 0-1 (scib-metrics ``ilisi_knn``): 1 = every neighbourhood holds all batches evenly."""
    from scib_metrics import ilisi_knn

    return float(ilisi_knn(exact_neighbours(latent, n_neighbors), np.asarray(batches), scale=True))


def novelty_scores(split, labels: np.ndarray, novelty: np.ndarray | None) -> dict:
    """How a method treats query cells of types the reference lacks ("unseen"), against the query's known-type cells.

    Returns
    -------
    dict
        Empty when the query holds no unseen or no known-type cell. Else ``n_unseen``,
        ``novel_recall`` (share of unseen cells answered ``UNKNOWN``), ``false_rejection``
        (share of known-type query cells answered ``UNKNOWN``) and, with a novelty score,
        ``novelty_auroc`` (unseen vs known-type query cells; 0.5 = chance).
    """
    from sklearn.metrics import roc_auc_score

    query = (split.obs[ROLE] == "query").to_numpy()
    truth = split.obs[TRUTH].astype(str).to_numpy()
    reference_types = np.unique(split.obs[LABEL].astype(str).to_numpy()[~query])
    unseen = query & ~np.isin(truth, reference_types)
    known = query & ~unseen
    if not unseen.any() or not known.any():
        return {}
    rejected = np.asarray(labels, dtype=str) == UNKNOWN
    row = {"n_unseen": int(unseen.sum()), "novel_recall": float(rejected[unseen].mean()), "false_rejection": float(rejected[known].mean())}
    if novelty is not None:
        row["novelty_auroc"] = float(roc_auc_score(unseen[query], np.asarray(novelty, dtype=float)[query]))
    return row


def rejected_below(labels: np.ndarray, novelty: np.ndarray, max_probability: float) -> np.ndarray:
    """``labels`` with ``UNKNOWN`` where the highest class probability (1 − ``novelty``) is at most ``max_probability``.

    At 0.5 this is CellTypist's own rejection: its 'prob match' mode answers 'Unassigned'
    when no class's probability exceeds ``p_thres`` (default 0.5).
    """
    return np.where(1 - np.asarray(novelty) <= max_probability, UNKNOWN, np.asarray(labels, dtype=str))


def score(split, labels: np.ndarray, latent: np.ndarray | None, novelty: np.ndarray | None = None) -> dict:
    """Label-transfer scores on the evaluated cells and integration scores of the latent on all cells.

    Returns
    -------
    dict
        ``balanced_accuracy``, ``macro_f1``, ``accuracy``, ``mcc``, ``n_evaluated``; one
        ``f1_<rarity>`` per reference-rarity group present; ``rare_type_f1`` on the rare-type
        task; :func:`novelty_scores` when the query holds types the reference lacks;
        ``batch_entropy``, ``ilisi`` (scaled 0-1), ``batch_silhouette``, ``label_silhouette`` when there is a latent.
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
    row.update(novelty_scores(split, labels, novelty))

    if latent is not None:
        batches = split.obs[BATCH].astype(str).to_numpy()
        mixing = metrics.batch_mixing(latent, batches)
        row["batch_entropy"] = mixing["batch_entropy"]
        row["ilisi"] = ilisi(latent, batches)
        row["batch_silhouette"] = metrics.batch_silhouette(latent, batches, truth)["value"]
        row["label_silhouette"] = metrics.label_silhouette(latent, truth)["value"]
    return row


# scib-metrics' Benchmarker at its defaults; the aggregates are its unscaled ones
# (``get_results(min_max_scale=False)``: a method's score does not depend on which others ran).
SCIB_COLUMNS = {"Bio conservation": "scib_bio", "Batch correction": "scib_batch", "Total": "scib_total"}


def _latent_key(split_key_digest: str, latent: np.ndarray) -> str:
    """What decides one embedding's Benchmarker scores: the split, the embedding's bytes, this file and scib-metrics' version."""
    from importlib.metadata import version

    digest = hashlib.sha256(split_key_digest.encode() + b"\0" + np.ascontiguousarray(latent, dtype=np.float32).tobytes())
    digest.update(Path(__file__).read_bytes() + b"\0" + version("scib-metrics").encode())
    return digest.hexdigest()


def benchmarker_scores(split, latents: dict[str, np.ndarray], split_key_digest: str, folder: Path) -> dict[str, dict]:
    """scib-metrics ``Benchmarker`` aggregates (``scib_bio``, ``scib_batch``, ``scib_total``) of each embedding.

    Labels are the truth of every cell, batches the split's; the pre-integration embedding is
    the uncorrected PCA (``methods.pca_embedding``); neighbours are exact (:func:`exact_neighbours`,
    passed to ``Benchmarker.prepare``), as for :func:`ilisi`. One result per embedding is stored in
    ``folder`` under a key of its content (:func:`_latent_key`) and reused.
    """
    import anndata as ad
    from methods import pca_embedding
    from scib_metrics.benchmark import BatchCorrection, Benchmarker, BioConservation

    folder.mkdir(parents=True, exist_ok=True)
    files = {name: folder / f"{_latent_key(split_key_digest, latent)}.json" for name, latent in latents.items()}
    missing = [name for name, path in files.items() if not path.is_file()]
    if missing:
        obs = split.obs[[TRUTH, BATCH]].astype(str).astype("category")
        data = ad.AnnData(obs=obs, obsm={"X_pca": pca_embedding(split), **{f"emb{i}": latents[name] for i, name in enumerate(missing)}})
        bench = Benchmarker(data, batch_key=BATCH, label_key=TRUTH, embedding_obsm_keys=[f"emb{i}" for i in range(len(missing))],
                            bio_conservation_metrics=BioConservation(), batch_correction_metrics=BatchCorrection(),
                            pre_integrated_embedding_obsm_key="X_pca", n_jobs=1, progress_bar=False)
        bench.prepare(neighbor_computer=exact_neighbours)
        bench.benchmark()
        results = bench.get_results(min_max_scale=False)
        for i, name in enumerate(missing):
            row = {column: float(results.loc[f"emb{i}", source]) for source, column in SCIB_COLUMNS.items()}
            tmp = files[name].with_suffix(".tmp")
            tmp.write_text(json.dumps(row))
            tmp.replace(files[name])
    return {name: json.loads(path.read_text()) for name, path in files.items()}
