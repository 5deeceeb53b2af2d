"""The annotation methods compared, behind one interface.

Every method receives the same AnnData (:func:`common.method_view` of a *split*, see
``tasks.py``): raw counts in ``X``, the label a method may learn from in ``obs[LABEL]``
(``UNKNOWN`` for unlabelled and query cells) and the batch in ``obs[BATCH]``; nothing else of
the split (the truth, the role, the evaluation mask) is there. It returns a label for every
cell (``UNKNOWN`` where the method itself rejects a cell) and, when it has them, a latent
embedding and a novelty score (higher = more likely a type the reference lacks; for a
probabilistic classifier, 1 − its highest class probability).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field

import numpy as np
from common import BATCH, LABEL, UNKNOWN, threads


@dataclass
class Prediction:
    """What a method returns: a label per cell, a latent and a novelty score if it has them, and its settings."""

    labels: np.ndarray
    latent: np.ndarray | None = None
    settings: dict = field(default_factory=dict)
    novelty: np.ndarray | None = None


def log_normalised(adata):
    """A copy with ``X`` = log1p of counts normalised to 10,000 per cell (scanpy's convention)."""
    import scanpy as sc

    adata = adata.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    return adata


def highly_variable(adata, n_top_genes: int = 2000):
    """Batch-aware HVGs on log-normalised data, as ``scpermut prepare`` selects them."""
    import scanpy as sc

    if adata.n_vars <= n_top_genes:
        return adata
    sc.pp.highly_variable_genes(adata, n_top_genes=n_top_genes, flavor="seurat", batch_key=BATCH)
    return adata[:, adata.var["highly_variable"].to_numpy()].copy()


def knn_transfer(latent: np.ndarray, labels: np.ndarray, n_neighbors: int = 15) -> np.ndarray:
    """Label every cell by distance-weighted vote of its nearest labelled cells in ``latent``."""
    from sklearn.neighbors import KNeighborsClassifier

    known = labels != UNKNOWN
    classifier = KNeighborsClassifier(n_neighbors=min(n_neighbors, int(known.sum())), weights="distance")
    classifier.fit(latent[known], labels[known])
    return classifier.predict(latent).astype(str)


def pca_embedding(adata, n_comps: int = 50, seed: int = 0) -> np.ndarray:
    """PCA of the scaled log-normalised HVGs."""
    import scanpy as sc

    data = highly_variable(log_normalised(adata))
    sc.pp.scale(data, max_value=10)
    n_comps = min(n_comps, data.n_obs - 1, data.n_vars - 1)
    sc.pp.pca(data, n_comps=n_comps, random_state=seed)
    return np.asarray(data.obsm["X_pca"], dtype=np.float32)


def pca_knn(adata, seed: int, settings: dict) -> Prediction:
    latent = pca_embedding(adata, seed=seed)
    labels = knn_transfer(latent, adata.obs[LABEL].astype(str).to_numpy())
    return Prediction(labels, latent, {"n_top_genes": 2000, "n_pcs": latent.shape[1], "k": 15})


def harmony_knn(adata, seed: int, settings: dict) -> Prediction:
    import harmonypy

    pca = pca_embedding(adata, seed=seed)
    result = harmonypy.run_harmony(pca, adata.obs[[BATCH]], [BATCH], random_state=seed, verbose=False)
    corrected = np.asarray(result.Z_corr)
    latent = np.ascontiguousarray(corrected.T if corrected.shape[0] != adata.n_obs else corrected, dtype=np.float32)
    labels = knn_transfer(latent, adata.obs[LABEL].astype(str).to_numpy())
    return Prediction(labels, latent, {"n_top_genes": 2000, "n_pcs": latent.shape[1], "k": 15, "harmony": "defaults"})


def celltypist_method(adata, seed: int, settings: dict) -> Prediction:
    import celltypist

    data = log_normalised(adata)
    labels = data.obs[LABEL].astype(str).to_numpy()
    reference = data[labels != UNKNOWN].copy()
    # CellTypist's default (logistic regression) trainer fails with scikit-learn >= 1.8; its SGD
    # trainer is the one documented for large references and runs here.
    options = {"use_SGD": True, "feature_selection": False, "n_jobs": 1}
    np.random.seed(seed)
    model = celltypist.train(reference, labels=LABEL, check_expression=False, **options)
    result = celltypist.annotate(data, model=model, majority_voting=False)
    predicted = result.predicted_labels["predicted_labels"].astype(str).to_numpy()
    novelty = 1 - result.probability_matrix.to_numpy().max(axis=1)
    return Prediction(predicted, None, {**options, "majority_voting": False, "genes": "all"}, novelty)


def scanvi(adata, seed: int, settings: dict) -> Prediction:
    """scVI pre-training, then scANVI; epochs are scvi-tools' own defaults when the settings say None."""
    import scvi
    import torch

    torch.set_num_threads(threads())
    scvi.settings.seed = seed
    data = highly_variable(log_normalised(adata))
    data.X = adata[:, data.var_names].X.copy()
    scvi.model.SCVI.setup_anndata(data, batch_key=BATCH, labels_key=LABEL)
    vae = scvi.model.SCVI(data, n_latent=settings["n_latent"])
    vae.train(max_epochs=settings["scvi_epochs"], accelerator="cpu", devices=1, enable_progress_bar=False)
    model = scvi.model.SCANVI.from_scvi_model(vae, unlabeled_category=UNKNOWN)
    model.train(max_epochs=settings["scanvi_epochs"], accelerator="cpu", devices=1, enable_progress_bar=False)
    probabilities = model.predict(soft=True)
    labels = probabilities.columns.to_numpy(dtype=str)[probabilities.to_numpy().argmax(axis=1)]
    latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
    epochs_run = {"scvi": _epochs_run(vae), "scanvi": _epochs_run(model)}
    used = {key: settings[key] for key in ("n_latent", "scvi_epochs", "scanvi_epochs")} | {"epochs_run": epochs_run, "n_top_genes": 2000}
    return Prediction(labels, latent, used, 1 - probabilities.to_numpy().max(axis=1))


def _epochs_run(model) -> int | None:
    """Epochs a scvi-tools model trained for, read from its training history."""
    history = getattr(model, "history", None) or {}
    for name in ("elbo_train", "train_loss_epoch"):
        if name in history:
            return int(len(history[name]))
    return None


def scmusketeers(adata, seed: int, settings: dict) -> Prediction:
    """The original scMusketeers (PyPI ``sc-musketeers``), run as its ``transfer`` command runs.

    ``sc-musketeers transfer REF.h5ad --class_key K --batch_key B --unlabeled_category U``:
    its defaults otherwise. The three flags are needed because its defaults name columns
    (``celltype``, ``manip``, ``UNK``) our data do not have.
    """
    import tensorflow as tf
    from scmusketeers.arguments.runfile import get_default_param
    from scmusketeers.transfer.optimize_model import Workflow

    tf.config.threading.set_intra_op_parallelism_threads(threads())
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "reference.h5ad")
        data = adata.copy()
        data.obs = data.obs[[LABEL, BATCH]].astype(str)
        data.write_h5ad(path)
        run_file = get_default_param(path)
        run_file.class_key, run_file.batch_key, run_file.unlabeled_category = LABEL, BATCH, UNKNOWN
        run_file.out_dir = folder
        run_file.train_test_random_seed = seed
        for name, value in settings.get("overrides", {}).items():
            setattr(run_file, name, value)
        workflow = Workflow(run_file=run_file)
        workflow.process_dataset()
        workflow.train_val_split()
        predicted, *_ = workflow.make_experiment()
    # It drops cells with no count; those come back unassigned.
    labels = predicted.obs[f"{LABEL}_scMusk"].astype(str).reindex(adata.obs_names).fillna(UNKNOWN).to_numpy()
    latent = np.zeros((adata.n_obs, predicted.obsm["X_scMusk"].shape[1]), dtype=np.float32)
    position = adata.obs_names.get_indexer(predicted.obs_names)
    latent[position] = predicted.obsm["X_scMusk"]
    return Prediction(labels, latent, {"cli": "defaults + --class_key --batch_key --unlabeled_category", **settings.get("overrides", {})})


def scpermut_prepared(adata, seed: int):
    """The split as ``scpermut prepare`` writes it, through the package's in-memory equivalent.

    QC filters are left out on purpose so that every method sees exactly the same cells.
    """
    from scpermut.data.preprocess import PrepareSettings, prepare_anndata
    from scpermut.keys import Keys

    # Unlabelled and query cells are both ``UNKNOWN`` here (the view carries no role): the
    # package trains on them alike and selects genes from all cells either way.
    prepared = prepare_anndata(adata, keys=Keys(class_key=LABEL, batch_key=BATCH, unlabeled_category=UNKNOWN), settings=PrepareSettings(seed=seed))
    return prepared[adata.obs_names].copy()


def scpermut_code_fingerprint() -> str:
    """Short SHA-256 of the package modules the benchmark can import (``cache.closure_fingerprint``)."""
    from pathlib import Path

    import cache
    import scpermut

    return cache.closure_fingerprint(Path(scpermut.__file__).resolve().parent)[:12]


# Search results by split and search settings: the seeds of one split share one search.
_SEARCHES: dict[str, dict] = {}


def tuned_options(adata, tune: dict) -> dict:
    """The best options of a seeded ``scpermut tune`` search on the split (``tune``: its arguments).

    The search sees what training sees: the reference's labels (scored on its validation
    cells) and every cell's batch; the query's labels never. It runs once per split (seed
    ``tune["seed"]``, default 0) and every seed of the split trains with its result, as a user
    tunes once and then trains.
    """
    from pathlib import Path

    from scpermut.constants import TUNE_BEST_PARAMS
    from scpermut.steps.tune import tune_file

    search = {"seed": 0, **tune}
    parts = [*adata.obs_names, *adata.obs[LABEL].astype(str), json.dumps(search, sort_keys=True)]
    memo = hashlib.sha256("\0".join(parts).encode()).hexdigest()
    if memo not in _SEARCHES:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "prepared.h5ad"
            scpermut_prepared(adata, search["seed"]).write_h5ad(path)
            tune_file(path, Path(folder) / "tune", **search)
            _SEARCHES[memo] = json.loads((Path(folder) / "tune" / TUNE_BEST_PARAMS).read_text())
    return dict(_SEARCHES[memo])


# The novelty score scpermut's annotate writes (issue 21); while it writes none, 1 - confidence stands in.
NOVELTY = "scpermut_novelty"


def scpermut(adata, seed: int, settings: dict) -> Prediction:
    import tensorflow as tf

    from scpermut import Model, annotate, constants

    tf.config.threading.set_intra_op_parallelism_threads(threads())
    code = scpermut_code_fingerprint()  # before training: the code this process imported
    options = dict(settings.get("options", {}))
    prepared = scpermut_prepared(adata, seed)
    if settings.get("tune"):
        options.update(tuned_options(adata, settings["tune"]))
    model = Model(seed=seed, **options).fit(prepared)
    # The package's own answer (its default Unknown rule included), as `scpermut predict` gives it.
    annotate(prepared, model, umap=False)
    obs = prepared.obs
    latent = np.asarray(prepared.obsm[constants.LATENT], dtype=np.float32)
    novelty = None
    if constants.PREDICTION in obs:
        labels = obs[constants.PREDICTION].astype(str).to_numpy()
        novelty = obs[NOVELTY].to_numpy(np.float32) if NOVELTY in obs else 1 - obs[constants.CONFIDENCE].to_numpy(np.float32)
    else:
        # Without its classifier the model is an integration method: score its latent by kNN.
        labels = knn_transfer(latent, adata.obs[LABEL].astype(str).to_numpy())
    used = {"training": model.record.training, "network": {k: v for k, v in model.record.network.items() if k not in ("n_genes", "n_classes", "n_batches")}}
    used["novelty"] = NOVELTY if NOVELTY in obs else (f"1 - {constants.CONFIDENCE}" if novelty is not None else None)
    return Prediction(labels, latent, {"changed": options, "epochs_run": model.record.run["epochs_run"], "code": code, **used}, novelty)


METHODS = {
    "scpermut": scpermut,
    "scmusketeers": scmusketeers,
    "scanvi": scanvi,
    "celltypist": celltypist_method,
    "pca_knn": pca_knn,
    "harmony_knn": harmony_knn,
}
