"""Class probabilities and the validation scores early stopping and run records use."""

from __future__ import annotations

import numpy as np

from scpermut.metrics import classification_scores
from scpermut.model.minibatches import infer
from scpermut.model.network import ScpermutNetwork
from scpermut.model.training_data import NOT_LABELLED, TrainingData
from scpermut.options import EARLY_STOPPING_METRICS


def predict_classes(network: ScpermutNetwork, expression, batch_size: int, rows=None) -> np.ndarray:
    """Class probabilities for the rows of a sparse matrix, or the ``rows`` of it picked by index
    (see :func:`scpermut.model.minibatches.infer`)."""
    return infer(network, expression, batch_size, rows=rows, names=["class_probabilities"])["class_probabilities"]


def pseudo_label_codes(
    network: ScpermutNetwork, data: TrainingData, threshold: float, batch_size: int, cells=None
) -> np.ndarray:
    """The predicted class of every cell without a training label (among ``cells``, default all)
    whose top probability reaches ``threshold``; ``-1`` for the others and for the labelled
    training cells."""
    codes = np.full(data.n_cells, NOT_LABELLED)
    cells = np.arange(data.n_cells) if cells is None else np.asarray(cells)
    cells = cells[data.train_codes[cells] == NOT_LABELLED]
    probabilities = predict_classes(network, data.expression, batch_size, rows=cells)
    sure = probabilities.max(axis=1) >= threshold
    codes[cells[sure]] = probabilities[sure].argmax(axis=1)
    return codes


def validation_scores(true_codes: np.ndarray, predicted_codes: np.ndarray) -> dict[str, float]:
    """The scores early stopping can follow (``early_stopping_metric``): balanced accuracy and
    Matthews correlation of predicted class codes, as :func:`scpermut.metrics.classification_scores`
    computes them."""
    scores = classification_scores(true_codes, predicted_codes)
    return {name: scores[name] for name in EARLY_STOPPING_METRICS}
