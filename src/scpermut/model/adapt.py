"""Query adaptation: map batches the model never trained on onto its reference, the reference frozen.

Each new batch ``b`` gets its own residual linear adapter on the latent,
``z' = z + z W_b + c_b``, starting at the identity (``W_b = 0``, ``c_b = 0``). Only ``W_b`` and
``c_b`` train — a few hundred steps on that batch's cells alone — and the encoder, the
classifier and everything in the model folder stay as saved. The target is the sample of the
reference latent the folder keeps (:data:`scpermut.constants.MODEL_REFERENCE_SAMPLE`):

- **alignment**: for every type ``t``, the kernel MMD between the batch's cells pseudo-labelled
  ``t`` and the reference sample's cells of type ``t``
  (:func:`scpermut.model.losses.class_kernel_mmd`);
- **confidence**: the frozen classifier's cross-entropy against those pseudo-labels, so the
  adapter cannot buy alignment by pushing cells across a decision boundary.

Pseudo-labels are redrawn from the adapted latent every ``relabel_every`` steps. A cell the
classifier is not sure of (below the model's ``pseudo_label_threshold``) moves with its batch's
adapter but pulls on nothing. Nor does a cell the **novelty gate** stops, as in training
(:func:`scpermut.model.train.scores.pseudo_label_codes`): its novelty under the model's saved
:class:`~scpermut.model.novelty.NoveltyModel` (``novelty.npz``), recomputed on the adapted latent
at every relabelling, is above the model's ``pseudo_label_novelty``; so a type the reference
lacks is not dragged onto a known one. A batch whose median novelty is above the gate looks
novel as a whole (its batch effect, not a new type) and is not gated
(:func:`~scpermut.model.novelty.shifted_batches`). A model folder without ``novelty.npz`` (an
earlier version) adapts without the gate. The encoder runs once: adaptation works on the
latent, so it costs seconds, not a retraining.

Each batch is adapted alone, from a generator seeded by the model's seed and the batch name:
a batch maps the same whether it comes alone or with others, and a run is bit-identical for a
model, a query and a seed.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from scpermut import constants
from scpermut.model.minibatches import infer
from scpermut.model.novelty import NoveltyModel, shifted_batches
from scpermut.model.training_data import NOT_LABELLED, TrainingData
from scpermut.options import default

log = logging.getLogger(__name__)

# The reference latent sample: at most about this many labelled cells, stratified per type,
# with every cell of a type that has fewer than MIN_CELLS_PER_TYPE.
REFERENCE_SAMPLE_CELLS = 20_000
MIN_CELLS_PER_TYPE = 100
_CHUNK = 8192  # cells per classifier call outside the training step


@dataclass(frozen=True)
class AdaptSettings:
    """How each new batch's adapter trains."""

    steps: int = 300
    learning_rate: float = 3e-3
    cells_per_step: int = 256  # query cells, and as many reference cells, per step
    relabel_every: int = 50
    confidence_weight: float = 1.0
    # Stop at a relabelling once the last ``relabel_every`` steps moved the batch's cells by less
    # than this (root mean square, relative to their spread around their mean); 0: every step.
    # Off by default: measured on Kang's four held-out batches, two seeds (benchmarks/map.py,
    # docs/benchmarks_map.md), 0.05 stopped after 100-200 steps at 53 % of the CPU time, balanced
    # accuracy unchanged, but iLISI 0.009 lower on average than 300 steps (-0.017 to +0.004 per
    # batch): a window's movement settles at 0.03-0.04 of the spread while mixing still improves.
    tolerance: float = 0.0


def reference_sample(network, data: TrainingData, seed: int, batch_size: int) -> dict[str, np.ndarray]:
    """The latent, class codes and batch codes of a seeded, type-stratified sample of the labelled cells.

    Every type keeps its share of ``REFERENCE_SAMPLE_CELLS`` (all its cells when fewer than
    ``MIN_CELLS_PER_TYPE``); written to the model folder for :func:`adapt_new_batches`.
    """
    codes = np.maximum(data.train_codes, data.validation_codes)
    labelled = np.flatnonzero(codes != NOT_LABELLED)
    if labelled.size == 0:
        return {}
    share = min(1.0, REFERENCE_SAMPLE_CELLS / labelled.size)
    rng = np.random.default_rng([seed, 23])
    chosen = []
    for code in np.unique(codes[labelled]):
        members = labelled[codes[labelled] == code]
        size = min(members.size, max(int(members.size * share), MIN_CELLS_PER_TYPE))
        chosen.append(rng.choice(members, size=size, replace=False))
    cells = np.sort(np.concatenate(chosen))
    latent = infer(network, data.expression, batch_size, rows=cells, names=["latent"])["latent"]
    return {
        "latent": latent.astype(np.float32),
        "classes": codes[cells].astype(np.int32),
        "batches": data.batch_codes[cells].astype(np.int32),
    }


DEFAULT_SETTINGS = AdaptSettings()


def adapt_new_batches(network, latent: np.ndarray, batches: np.ndarray, record, settings: AdaptSettings | None = None):
    """Adapt the rows of ``latent`` whose batch the model never trained on.

    Parameters
    ----------
    network
        The trained network (its classifier is used, never changed).
    latent
        The frozen encoder's latent of every row.
    batches
        Each row's batch name; rows of the model's training batches are left as they are.
    record
        The model's :class:`~scpermut.model.persistence.ModelRecord` (batches, reference sample, seed).
    settings
        How the adapters train (default :data:`DEFAULT_SETTINGS`).

    Returns
    -------
    ``(latent, class_probabilities, report)`` with every row's (uncalibrated) probabilities,
    or None when no row belongs to a new batch or the model cannot adapt (a warning says why).
    """
    settings = settings or DEFAULT_SETTINGS
    names = np.asarray(batches).astype(str)
    new = sorted(set(names) - set(record.batches))
    if not new:
        return None
    if network.classifier is None:
        log.warning("the model has no classifier: query adaptation needs its pseudo-labels; mapping frozen")
        return None
    if not record.reference:
        log.warning(
            "%s: the model folder has no %s (trained by an earlier scpermut): mapping frozen; "
            "query adaptation needs a model trained by this version",
            constants.MODEL_REFERENCE_SAMPLE, constants.MODEL_REFERENCE_SAMPLE,
        )
        return None
    threshold = float(record.training["pseudo_label_threshold"])
    seed = int(record.training["seed"])
    novelty, gate = novelty_gate(record)
    adapted = np.array(latent, dtype=np.float32, copy=True)
    report = {"settings": asdict(settings), "confidence_threshold": threshold, "novelty_gate": gate, "batches": {}}
    for name in new:
        rows = np.flatnonzero(names == name)
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        adapted[rows], report["batches"][name] = _adapt_batch(
            network.classifier, adapted[rows], record.reference, threshold, rng, settings, novelty, gate
        )
        log.info("adapted query batch %s (%d cells): %s", name, rows.size, report["batches"][name])
    return adapted, _classify(network.classifier, adapted), report


def novelty_gate(record) -> tuple[NoveltyModel | None, float | None]:
    """The model's novelty model and the gate training used (``pseudo_label_novelty`` as recorded,
    its declared default for a folder that predates the option); ``(None, None)`` without a
    novelty model (a folder from before it) or with the gate off (1)."""
    if not record.novelty:
        log.info("the model folder has no %s: query adaptation runs without the novelty gate", constants.MODEL_NOVELTY)
        return None, None
    gate = float(record.training.get("pseudo_label_novelty", default("pseudo_label_novelty")))
    if gate >= 1:
        return None, None
    return NoveltyModel.from_arrays(record.novelty), gate


def pulled_cells(probabilities: np.ndarray, threshold: float, in_reference: np.ndarray, novelty=None, gate=None):
    """The cells that pull on the reference (their indices) and how many the novelty gate stopped.

    A cell pulls when its top class probability reaches ``threshold``, its class is in the
    reference sample and, with a gate, its ``novelty`` is at most ``gate`` — unless the batch's
    median novelty is above the gate (the batch looks novel as a whole: nothing is gated).
    """
    labels = probabilities.argmax(axis=1)
    pulled = (probabilities.max(axis=1) >= threshold) & in_reference[labels]
    gated = 0
    if gate is not None and novelty is not None and not shifted_batches(novelty, np.zeros(len(novelty), np.int8), gate).size:
        novel = novelty > gate
        gated = int((pulled & novel).sum())
        pulled &= ~novel
    return np.flatnonzero(pulled), gated


def _classify(classifier, latent: np.ndarray) -> np.ndarray:
    return np.concatenate(
        [np.asarray(classifier(latent[start : start + _CHUNK], training=False)) for start in range(0, len(latent), _CHUNK)]
    ).astype(np.float32)


def _adapt_batch(classifier, latent, reference, threshold, rng, settings: AdaptSettings, novelty_model=None, gate=None):
    """Train one batch's adapter; return its adapted latent and a summary of the fit.

    With a ``novelty_model`` and a ``gate``, the cells :func:`pulled_cells` stops pull on nothing."""
    import keras
    import tensorflow as tf

    from scpermut.model.losses import class_kernel_mmd

    dim = latent.shape[1]
    n_classes = int(classifier.output_shape[-1])
    weights = tf.Variable(tf.zeros((dim, dim)), name="adapter_weights")
    shift = tf.Variable(tf.zeros((dim,)), name="adapter_shift")
    optimizer = keras.optimizers.Adam(settings.learning_rate)
    optimizer.build([weights, shift])
    identity = np.eye(n_classes, dtype=np.float32)
    reference_latent, reference_codes = reference["latent"], reference["classes"]
    in_reference = np.isin(np.arange(n_classes), reference_codes)
    members = {code: np.flatnonzero(reference_codes == code) for code in np.unique(reference_codes)}

    def moved(values):
        return values + tf.matmul(values, weights) + shift

    # No autograph (the step has no tensor-dependent Python control flow): tracing stays cheap.
    @tf.function(reduce_retracing=True, autograph=False)
    def step(query, query_one_hot, target, target_one_hot):
        with tf.GradientTape() as tape:
            adapted = moved(query)
            discrepancies, counts = class_kernel_mmd(adapted, query_one_hot, target, target_one_hot)
            alignment = tf.reduce_sum(counts * discrepancies) / tf.maximum(tf.reduce_sum(counts), 1.0)
            probabilities = classifier(adapted, training=False)
            confidence = tf.reduce_mean(keras.losses.categorical_crossentropy(query_one_hot, probabilities))
            loss = alignment + settings.confidence_weight * confidence
        optimizer.apply_gradients(zip(tape.gradient(loss, [weights, shift]), [weights, shift]))
        return alignment

    alignments, eligible, gated, batch_novelty = [], np.zeros(0, dtype=np.int64), 0, None
    spread = max(float(np.sqrt(np.mean(np.sum((latent - latent.mean(axis=0)) ** 2, axis=1)))), 1e-12)
    movements, previous = [], latent
    for number in range(settings.steps):
        if number % settings.relabel_every == 0:
            current = moved(latent).numpy()
            if number:
                movements.append(float(np.sqrt(np.mean(np.sum((current - previous) ** 2, axis=1)))) / spread)
                previous = current
                if movements[-1] < settings.tolerance:
                    break
            probabilities = _classify(classifier, current)
            labels = probabilities.argmax(axis=1)
            if novelty_model is not None:
                novelty = novelty_model.novelty(current)
                batch_novelty = float(np.median(novelty))
            else:
                novelty = None
            eligible, gated = pulled_cells(probabilities, threshold, in_reference, novelty, gate)
            if eligible.size == 0:
                break
        query = rng.choice(eligible, size=min(settings.cells_per_step, eligible.size), replace=False)
        types = np.unique(labels[query])
        per_type = max(1, settings.cells_per_step // types.size)
        target = np.concatenate(
            [rng.choice(members[code], size=min(per_type, members[code].size), replace=False) for code in types]
        )
        alignments.append(
            float(step(latent[query], identity[labels[query]], reference_latent[target], identity[reference_codes[target]]))
        )
    summary = {
        "n_cells": int(latent.shape[0]),
        "n_pseudo_labelled": int(eligible.size),
        "n_novelty_gated": gated,
        "median_novelty": None if batch_novelty is None else round(batch_novelty, 4),
        "steps": len(alignments),
        "alignment_first": round(float(np.mean(alignments[:10])), 5) if alignments else None,
        "alignment_last": round(float(np.mean(alignments[-10:])), 5) if alignments else None,
        # Mean alignment loss over each stretch of `relabel_every` steps.
        "alignment_windows": [
            round(float(np.mean(alignments[start : start + settings.relabel_every])), 5)
            for start in range(0, len(alignments), settings.relabel_every)
        ],
        # How far each stretch of `relabel_every` steps moved the cells (relative to their spread).
        "movement_windows": [round(value, 5) for value in movements],
        "shift_norm": round(float(tf.norm(shift)), 4),
    }
    return moved(latent).numpy(), summary
