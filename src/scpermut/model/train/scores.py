"""Class probabilities and the validation scores early stopping and run records use."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import balanced_accuracy_score, matthews_corrcoef

from scpermut.model.batches import infer
from scpermut.model.network import ScpermutNetwork


def predict_classes(network: ScpermutNetwork, expression, batch_size: int) -> np.ndarray:
    """Class probabilities for the rows of a sparse matrix (see :func:`scpermut.model.batches.infer`)."""
    if expression.shape[0] == 0:
        return np.zeros((0, network.network_config.n_classes), np.float32)
    return infer(network, expression, batch_size)["class_probabilities"]


def classification_scores(true_codes: np.ndarray, predicted_codes: np.ndarray) -> dict[str, float]:
    """Balanced accuracy and Matthews correlation of predicted class codes."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # classes predicted but absent from the validation cells
        return {
            "balanced_accuracy": float(balanced_accuracy_score(true_codes, predicted_codes)),
            "mcc": float(matthews_corrcoef(true_codes, predicted_codes)),
        }
