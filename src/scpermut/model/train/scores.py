"""Class probabilities and the validation scores early stopping and run records use."""

from __future__ import annotations

import numpy as np

from scpermut.metrics import classification_scores
from scpermut.model.minibatches import infer
from scpermut.model.network import ScpermutNetwork
from scpermut.model.novelty import RECONSTRUCTION_TOP_GENES, NoveltyModel, ReconstructionNovelty, shifted_batches
from scpermut.model.training_data import NOT_LABELLED, NOVEL, TrainingData
from scpermut.options import EARLY_STOPPING_METRICS


def predict_classes(network: ScpermutNetwork, expression, batch_size: int, rows=None) -> np.ndarray:
    """Class probabilities for the rows of a sparse matrix, or the ``rows`` of it picked by index
    (see :func:`scpermut.model.minibatches.infer`)."""
    return infer(network, expression, batch_size, rows=rows, names=["class_probabilities"])["class_probabilities"]


def pseudo_label_codes(
    network: ScpermutNetwork,
    data: TrainingData,
    threshold: float,
    novelty_gate: float,
    batch_size: int,
    cells=None,
) -> np.ndarray:
    """The predicted class of every cell without a training label (among ``cells``, default all)
    whose top probability reaches ``threshold`` and whose novelty is at most ``novelty_gate``
    (1: no gate); ``NOVEL`` for the cells the gate stops, ``-1`` for the others and for the
    labelled training cells. A batch whose median novelty is above the gate is not gated
    (:func:`~scpermut.model.novelty.shifted_batches`)."""
    codes = np.full(data.n_cells, NOT_LABELLED)
    cells = np.arange(data.n_cells) if cells is None else np.asarray(cells)
    cells = cells[data.train_codes[cells] == NOT_LABELLED]
    if cells.size == 0:
        return codes
    outputs = infer(network, data.expression, batch_size, rows=cells)
    probabilities = outputs["class_probabilities"]
    sure = probabilities.max(axis=1) >= threshold
    if novelty_gate < 1:
        novelty = novelty_model(network, data, outputs["latent"], cells, batch_size).novelty(outputs["latent"])
        batches = data.batch_codes[cells]
        shifted = np.isin(batches, shifted_batches(novelty, batches, novelty_gate))
        novel = (novelty > novelty_gate) & ~shifted
        codes[cells[novel]] = NOVEL
        sure &= ~novel
    codes[cells[sure]] = probabilities[sure].argmax(axis=1)
    return codes


# Labelled training cells whose latent fits the type centres (an even stride beyond it).
MAX_FIT_CELLS = 20_000


def novelty_model(
    network: ScpermutNetwork, data: TrainingData, latent: np.ndarray, cells: np.ndarray, batch_size: int
) -> NoveltyModel:
    """The novelty of the network's latent: type centres from the labelled training cells, its
    scale from the calibration cells (a held-out batch), else the validation cells, among
    ``cells`` (whose ``latent`` is given)."""
    training = np.flatnonzero(data.train_codes != NOT_LABELLED)
    training = training[:: max(1, int(np.ceil(training.size / MAX_FIT_CELLS)))]
    training_latent = infer(network, data.expression, batch_size, rows=training, names=["latent"])["latent"]
    held_out = data.calibration_codes[cells] != NOT_LABELLED
    if not held_out.any():
        held_out = data.validation_codes[cells] != NOT_LABELLED
    return NoveltyModel.fit(training_latent, data.train_codes[training], latent[held_out])


def reconstruction_novelty(
    network: ScpermutNetwork, data: TrainingData, held_out: np.ndarray, batch_size: int
) -> ReconstructionNovelty | None:
    """The reconstruction novelty of the network (:class:`~scpermut.model.novelty.ReconstructionNovelty`):
    gene scales from the labelled training cells (an even stride of ``MAX_FIT_CELLS``), reference
    scores from the ``held_out`` cells (the calibration batch, else the validation cells; the
    training cells when there are none). Two streamed passes, one chunk of reconstruction at a time.
    None for a negative-binomial decoder (it reconstructs counts, not the log-normalised input).
    """
    if network.network_config.reconstruction != "mse":
        return None
    training = np.flatnonzero(data.train_codes != NOT_LABELLED)
    training = training[:: max(1, int(np.ceil(training.size / MAX_FIT_CELLS)))]
    if training.size == 0:
        return None
    sum_of_squares = np.zeros(network.network_config.n_genes, np.float64)

    def accumulate(x, reconstruction):
        sum_of_squares[:] += np.square(reconstruction - x, dtype=np.float64).sum(axis=0)
        return np.zeros(len(x), np.float32)

    infer(network, data.expression, batch_size, rows=training, names=[], residuals=accumulate)
    model = ReconstructionNovelty(
        ReconstructionNovelty.gene_scale_from(sum_of_squares, training.size), RECONSTRUCTION_TOP_GENES, np.zeros(0)
    )
    cells = held_out if held_out.size else training
    scores = infer(network, data.expression, batch_size, rows=cells, names=[], residuals=model.score)["residual_score"]
    return model.calibrated(scores)


def validation_scores(true_codes: np.ndarray, predicted_codes: np.ndarray) -> dict[str, float]:
    """The scores early stopping can follow (``early_stopping_metric``): balanced accuracy and
    Matthews correlation of predicted class codes, as :func:`scpermut.metrics.classification_scores`
    computes them."""
    scores = classification_scores(true_codes, predicted_codes)
    return {name: scores[name] for name in EARLY_STOPPING_METRICS}
