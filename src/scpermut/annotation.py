"""Label transfer: align a dataset to a trained model's genes, embed it, predict cell types, draw a UMAP."""

from __future__ import annotations

import logging
from pathlib import PurePosixPath

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scpermut import constants
from scpermut._plain import plain
from scpermut.data.align import check_missing_genes
from scpermut.data.io import detected_counts
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.model.novelty import neighbourhood_median, shifted_batches
from scpermut.options import default

log = logging.getLogger(__name__)

# log1p of 10,000 counts per cell stays below ~10; far larger values are not log-normalised data.
_MAX_LOG_NORMALISED = 30.0
# A log-normalised X should sum back (expm1) to about the training target_sum per cell.
_TARGET_SUM_TOLERANCE = 0.1


def log_normalised_expression(adata, preprocess: dict, source: str = "AnnData") -> tuple[sp.csr_matrix, pd.DataFrame]:
    """Return the log-normalised expression of ``adata`` as the model expects it, and its genes' ``var``.

    Taken as is from ``X`` when ``adata`` was written by ``scpermut prepare``; otherwise raw
    counts (``X``, else ``layers["counts"]``, else ``.raw``: :func:`scpermut.data.io.detected_counts`,
    the order the input files are read in) are normalised the way ``prepare`` did (``log1p`` of
    counts scaled to ``preprocess["target_sum"]`` per cell), over the counts' own genes;
    otherwise ``X`` is taken to be log-normalised already.
    """
    if constants.PREPARE_UNS in adata.uns:
        return sp.csr_matrix(adata.X, dtype=np.float32), adata.var
    counts = detected_counts(adata, source)
    target_sum = float(preprocess["target_sum"])
    if counts is not None:
        log.info("%s: normalising raw counts (target_sum %g, log1p) as in training", source, target_sum)
        # Older model folders do not list the normalisation genes: then every gene counts.
        normalisation_genes = preprocess.get("normalisation_genes")
        in_library = None if normalisation_genes is None else counts.var_names.isin(normalisation_genes)
        return normalise_counts(counts.X, target_sum, in_library), counts.var
    matrix = sp.csr_matrix(adata.X, dtype=np.float32)
    if matrix.nnz and not np.isfinite(matrix.data).all():
        raise InputError(
            f"{source}: X holds {int((~np.isfinite(matrix.data)).sum())} NaN or infinite values; "
            f"give raw counts in X or layers['{constants.COUNTS_LAYER}']."
        )
    if matrix.nnz and (matrix.data.min() < 0 or matrix.data.max() > _MAX_LOG_NORMALISED):
        raise InputError(
            f"{source}: X is neither raw counts nor log-normalised (values from {matrix.data.min():.2g} "
            f"to {matrix.data.max():.2g}, e.g. scaled data); give raw counts in X or layers['{constants.COUNTS_LAYER}']."
        )
    totals = np.asarray(np.expm1(matrix).sum(axis=1)).ravel()
    typical_total = float(np.median(totals[totals > 0])) if (totals > 0).any() else target_sum
    if typical_total > target_sum * (1 + _TARGET_SUM_TOLERANCE):
        raise InputError(
            f"{source}: X looks log-normalised to about {typical_total:.3g} counts per cell, but the model "
            f"was trained at {target_sum:.3g}; give raw counts in X or layers['{constants.COUNTS_LAYER}']."
        )
    if typical_total < target_sum * (1 - _TARGET_SUM_TOLERANCE):
        # Normalised data later subset to some genes sums below target_sum: plausible, so only warn.
        log.warning(
            "%s: X sums back to about %.3g counts per cell, not the %.3g the model was trained at "
            "(a gene subset, or another normalisation?); raw counts give exact results",
            source, typical_total, target_sum,
        )
    log.info("%s: X is not raw counts; using it as log-normalised expression", source)
    return matrix, adata.var


def normalise_counts(counts, target_sum: float, in_library=None) -> sp.csr_matrix:
    """``log1p(counts / total * target_sum)`` per cell, kept sparse (empty cells stay 0).

    ``total`` sums the genes flagged in the boolean mask ``in_library`` (all genes when None).
    """
    counts = sp.csr_matrix(counts, dtype=np.float32)
    library = counts if in_library is None else counts[:, np.asarray(in_library, dtype=bool)]
    totals = np.asarray(library.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    normalised = sp.csr_matrix(sp.diags(scale.astype(np.float32)) @ counts, dtype=np.float32)
    np.log1p(normalised.data, out=normalised.data)
    return normalised


def align_genes(
    matrix: sp.csr_matrix,
    var_names,
    genes: list[str],
    *,
    max_missing_genes: float,
    source: str = "AnnData",
    var: pd.DataFrame | None = None,
) -> tuple[sp.csr_matrix, int]:
    """Reorder the columns of ``matrix`` to the model's ``genes``, zero-filling the missing ones.

    Returns
    -------
    The aligned CSR matrix (cells x len(genes)) and the number of model genes missing from the data.

    Raises
    ------
    InputError
        When more than ``max_missing_genes`` (a fraction) of the model's genes are missing
        (:func:`scpermut.data.align.check_missing_genes`; ``var``, the data's, helps its hint).
    """
    names = pd.Index(np.asarray(var_names, dtype=str))
    first = ~names.duplicated()
    if not first.all():
        log.warning(
            "%s: %d duplicated gene names; the first occurrence of each is used",
            source,
            int((~first).sum()),
        )
    check_missing_genes(genes, names, max_missing_genes=max_missing_genes, source=source, var=var)
    positions = pd.Index(names[first]).get_indexer(genes)
    columns = np.flatnonzero(first)[positions[positions >= 0]]
    present = np.flatnonzero(positions >= 0)
    n_missing = len(genes) - present.size
    if n_missing:
        log.warning(
            "%s: %d of the model's %d genes are missing and set to 0", source, n_missing, len(genes)
        )
    selector = sp.csr_matrix(
        (np.ones(present.size, np.float32), (columns, present)), shape=(matrix.shape[1], len(genes))
    )
    return sp.csr_matrix(matrix @ selector, dtype=np.float32), n_missing


def annotate(
    adata,
    model,
    *,
    unknown_threshold: float = default("unknown_threshold"),
    novelty_threshold: float = default("novelty_threshold"),
    max_missing_genes: float = default("max_missing_genes"),
    adapt: bool = default("adapt"),
    umap: bool = True,
    batch_size: int | None = None,
    copy: bool = False,
    source: str = "AnnData",
):
    """Embed ``adata`` with a trained model and predict its cell types.

    Parameters
    ----------
    adata
        Cells to annotate: a prepared AnnData, or any AnnData with raw counts or
        log-normalised expression whose gene names match the model's.
    model
        A trained :class:`scpermut.Model`.
    unknown_threshold
        Cells whose highest class probability is below this get the label ``"Unknown"``
        (the model's unlabelled category); 0 keeps every prediction.
    novelty_threshold
        Cells whose ``scpermut_novelty`` is above this get the label ``"Unknown"`` (1: never);
        a batch whose median novelty is above it is left alone, with a warning (it looks novel
        as a whole: its batch effect, not a new type).
    max_missing_genes
        Largest fraction of the model's genes that may be absent from ``adata`` (zero-filled).
    adapt
        Adapt the cells of batches the model never trained on (``obs[batch_key]``; a query
        without that column is one batch) to the reference with a per-batch latent adapter,
        the model unchanged (:mod:`scpermut.model.adapt`); False maps every cell frozen.
    umap
        Also compute a UMAP of the latent space.
    batch_size
        Cells per inference batch (default: 4 x the training batch size).
    copy
        Return an annotated copy instead of changing ``adata``.
    source
        Name of the data in messages.

    Returns
    -------
    None, or the annotated copy when ``copy=True``. Sets the following fields:

    ``adata.obsm["X_scpermut"]`` : ndarray (float32, cells x latent_dim)
        The integrated latent space.
    ``adata.obs["scpermut_prediction"]`` : categorical
        Predicted cell type (or "Unknown"); with a classifier only.
    ``adata.obs["scpermut_label"]`` : categorical
        The final label: the given label of labelled reference cells, else the prediction.
    ``adata.obs["scpermut_confidence"]`` : float32
        Highest class probability; with a classifier only.
    ``adata.obs["scpermut_novelty"]`` : float32
        0 (typical of a known type) to 1 (unlike every known type), the median over the cell's
        15 nearest annotated cells (:mod:`scpermut.model.novelty`); with a classifier and a
        model saved by this version only.
    ``adata.obsm["scpermut_probabilities"]`` : ndarray (float32, cells x classes)
        Class probabilities, columns in the order of ``uns["scpermut"]["classes"]``.
    ``adata.obsm["X_scpermut_umap"]`` : ndarray
        UMAP of the latent space (when ``umap``; ``sc.pl.embedding(adata, "X_scpermut_umap")``
        draws it). A UMAP of the user's own in ``obsm["X_umap"]`` is left untouched.
    ``adata.uns["scpermut"]`` : dict
        Classes, the model's keys (class, batch, unlabelled category), prediction parameters,
        training parameters, seed, versions, device, missing genes, and ``adaptation``: per
        adapted batch, its cells, pseudo-labelled cells, steps and alignment loss (empty when
        nothing was adapted).
    """
    adata = adata.copy() if copy else adata
    record = model.record
    expression, var = log_normalised_expression(adata, record.preprocess, source)
    aligned, n_missing = align_genes(
        expression, var.index, record.genes, max_missing_genes=max_missing_genes, source=source, var=var
    )
    keys = Keys.from_record(record.preprocess)
    # Without a batch column the data is one batch, named after its file: a path (its "/") would
    # turn the batch's record in uns into nested h5ad groups, from the file's root when absolute.
    if keys.batch_key in adata.obs:
        batches = np.asarray(adata.obs[keys.batch_key], dtype=str)
    else:
        batches = np.full(adata.n_obs, PurePosixPath(source).name)
    # Cells of batches the model never trained on: adapted (with ``adapt``) and scored by the
    # reconstruction novelty as well (a decoder it never fitted them with).
    new_batch = ~np.isin(batches, np.asarray(record.batches, dtype=str))
    outputs = model.transform(
        aligned, batch_size, batches=batches if adapt else None, reconstruction=bool(new_batch.any())
    )
    adata.obsm[constants.LATENT] = outputs["latent"]
    if "class_probabilities" in outputs:
        empty = np.asarray(abs(aligned).sum(axis=1)).ravel() == 0
        write_predictions(
            adata, model, outputs, keys, unknown_threshold, novelty_threshold, empty, source, new_batch, batches
        )
    else:
        log.warning(
            "the model was trained without a classifier: only the latent space (and UMAP) are written"
        )
    if umap:
        compute_umap(adata, int(record.training["seed"]))
    prediction = {
        "unknown_threshold": unknown_threshold,
        "novelty_threshold": novelty_threshold,
        "max_missing_genes": max_missing_genes,
        "adapt": adapt,
        "umap": umap,
        "source": source,
    }
    adata.uns[constants.UNS] = provenance(record, keys, prediction, n_missing, outputs.get("adaptation", {}))
    return adata if copy else None


def write_predictions(
    adata,
    model,
    outputs: dict,
    keys: Keys,
    unknown_threshold: float,
    novelty_threshold: float,
    empty: np.ndarray,
    source: str,
    new_batch: np.ndarray | None = None,
    batches: np.ndarray | None = None,
) -> None:
    """The label, confidence, probabilities and novelty fields from the model's class probabilities:
    a cell is ``Unknown`` when its confidence is below ``unknown_threshold``, its novelty above
    ``novelty_threshold`` (:func:`novel_cells`), or it is ``empty`` (no count on any model gene:
    nothing to tell a type by, whatever the classifier makes of a zero input; ``source`` names
    the data in the warning).

    A cell of a batch the model never trained on (``new_batch``) with a reconstruction novelty
    (``outputs["reconstruction_score"]``, ``batches`` each cell's batch name) has the larger of
    its two neighbourhood novelties: latent and reconstruction. Cells of the training batches keep
    the latent novelty alone."""
    record = model.record
    unknown_label = keys.unlabeled_category
    probabilities = outputs["class_probabilities"]
    confidence = probabilities.max(axis=1)
    labels = np.asarray(record.classes, dtype=object)[probabilities.argmax(axis=1)]
    if unknown_threshold > 0:
        labels[confidence < unknown_threshold] = unknown_label
    novelty = model.novelty(outputs["latent"])
    if novelty is not None:
        novelty = neighbourhood_median(outputs["latent"], novelty, int(record.training["seed"]))
        if "reconstruction_score" in outputs and new_batch is not None and new_batch.any():
            novelty = _with_reconstruction_novelty(model, outputs, novelty, new_batch, batches)
        labels[novel_cells(adata, novelty, novelty_threshold, keys.batch_key)] = unknown_label
        adata.obs[constants.NOVELTY] = novelty
    if empty.any():
        log.warning(
            "%s: %d cells have no count on any of the model's genes: they are labelled '%s'",
            source, int(empty.sum()), unknown_label,
        )
        labels[empty] = unknown_label
    adata.obs[constants.PREDICTION] = pd.Categorical(labels, categories=[*record.classes, unknown_label])
    adata.obs[constants.LABEL] = final_labels(adata, keys.class_key)
    adata.obs[constants.CONFIDENCE] = confidence.astype(np.float32)
    adata.obsm[constants.PROBABILITIES] = probabilities


def _with_reconstruction_novelty(model, outputs, novelty, new_batch, batches):
    """``novelty`` with the cells of new batches raised to their neighbourhood reconstruction novelty."""
    names, codes = np.unique(batches, return_inverse=True)
    reconstruction, rescaled = model.reconstruction_novelty(outputs["reconstruction_score"], codes)
    for code in rescaled:
        if new_batch[codes == code].any():
            log.info(
                "batch %s reconstructs worse than the reference as a whole: its cells' reconstruction novelty is "
                "judged against the batch's own median",
                names[code],
            )
    reconstruction = neighbourhood_median(outputs["latent"], reconstruction, int(model.record.training["seed"]))
    return np.where(new_batch, np.maximum(novelty, reconstruction), novelty).astype(np.float32)


def provenance(record, keys: Keys, prediction: dict, n_missing: int, adaptation: dict) -> dict:
    """What ``uns["scpermut"]`` records of an annotation: the model's classes, keys, training
    parameters and versions, the prediction's own parameters and the adaptation per batch."""
    return plain(
        {
            "classes": list(record.classes),
            "unknown_label": keys.unlabeled_category,
            "keys": keys.to_dict(),
            "genes_used": len(record.genes),
            "genes_missing": n_missing,
            "adaptation": adaptation,
            "prediction": prediction,
            "seed": int(record.training["seed"]),
            "parameters": record.run.get(
                "parameters", {"network": record.network, "training": record.training}
            ),
            "training": {
                key: record.run[key]
                for key in ("device", "input", "validation", "epochs_run", "loss_terms", "batch_head", "n_cells")
                if key in record.run
            },
            "versions": record.run.get("versions", {}),
        },
        arrays=False,
        none="",
    )


def novel_cells(adata, novelty: np.ndarray, threshold: float, batch_key: str) -> np.ndarray:
    """The cells whose novelty is above ``threshold``, but none in a batch that looks novel as a
    whole (its median above it): there the batch effect, not a new type, is the likely cause."""
    novel = novelty > threshold
    if not novel.any() or batch_key not in adata.obs:
        return novel
    batches = adata.obs[batch_key].astype(str).to_numpy()
    names, codes = np.unique(batches, return_inverse=True)
    for code in shifted_batches(novelty, codes, threshold):
        log.warning(
            "batch %s looks novel as a whole (median novelty %.2f, above --novelty_threshold %g): "
            "its cells are not called Unknown by novelty, as its batch effect is the likelier cause; "
            "check its mixing in the report",
            names[code],
            float(np.median(novelty[codes == code])),
            threshold,
        )
        novel[codes == code] = False
    return novel


def final_labels(adata, class_key: str) -> pd.Categorical:
    """The label to use for each cell: the given one for the labelled reference cells, else the prediction.

    The labelled reference cells are those ``prepare`` put in the train, validation or calibration split;
    a query cell's label is evidence for scoring, not a given label, so it gets the prediction.
    """
    labels = adata.obs[constants.PREDICTION].astype(str).to_numpy(dtype=object)
    if constants.SPLIT in adata.obs and class_key in adata.obs:
        split = adata.obs[constants.SPLIT].astype(str).to_numpy()
        given = np.isin(split, constants.LABELLED_SPLITS)
        labels[given] = adata.obs[class_key].astype(str).to_numpy()[given]
    return pd.Categorical(labels)


def compute_umap(adata, seed: int) -> None:
    """UMAP of ``obsm["X_scpermut"]`` into ``obsm["X_scpermut_umap"]`` (its parameters in
    ``uns["X_scpermut_umap"]``, the neighbours under ``scpermut_neighbors``): a UMAP the user
    already has (``obsm["X_umap"]``) is left as it is."""
    import scanpy as sc

    if adata.n_obs < 4:
        log.warning("only %d cells: no UMAP", adata.n_obs)
        return
    sc.pp.neighbors(
        adata,
        n_neighbors=min(15, adata.n_obs - 1),
        use_rep=constants.LATENT,
        random_state=seed,
        key_added=constants.NEIGHBORS,
    )
    sc.tl.umap(adata, random_state=seed, neighbors_key=constants.NEIGHBORS, key_added=constants.UMAP)


def labels_table(adata) -> pd.DataFrame:
    """One row per cell: ``barcode`` (the file's own), ``sample``, ``label`` (``obs["scpermut_label"]``),
    ``confidence``, ``annotated`` (predicted, not given), and ``novelty`` when the model scored it."""
    obs = adata.obs
    table = pd.DataFrame(
        {
            "barcode": obs["barcode"].astype(str).to_numpy() if "barcode" in obs else adata.obs_names.astype(str),
            "sample": obs[constants.SAMPLE].astype(str).to_numpy() if constants.SAMPLE in obs else "",
            "label": obs[constants.LABEL].astype(str).to_numpy(),
            "confidence": obs[constants.CONFIDENCE].astype(float).round(4).to_numpy(),
            "annotated": annotated_cells(adata),
        }
    )
    if constants.NOVELTY in obs:
        table["novelty"] = obs[constants.NOVELTY].astype(float).round(4).to_numpy()
    return table


def annotated_cells(adata) -> np.ndarray:
    """The cells whose label is a prediction: query and unlabelled cells (every cell of a file ``prepare`` never saw)."""
    if constants.SPLIT not in adata.obs:
        return np.ones(adata.n_obs, dtype=bool)
    return adata.obs[constants.SPLIT].astype(str).isin([constants.SPLIT_QUERY, constants.SPLIT_UNLABELLED]).to_numpy()
