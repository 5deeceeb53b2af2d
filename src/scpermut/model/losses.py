"""Loss terms: reconstruction (MSE or negative binomial), focal classification, adversarial batch loss.

Every function returns one value per cell so that the training step can mask cells
(only labelled cells count for the classifier) before averaging.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

_EPSILON = 1e-8


def balanced_class_weights(class_codes: np.ndarray, n_classes: int) -> np.ndarray:
    """Per-class weights ``n / (K * n_k)`` over the labelled cells (codes >= 0), K the classes present.

    A class without cells gets weight 1. The weights average to 1 over the labelled cells,
    so they rebalance the classes without changing the scale of the loss.
    """
    labelled = class_codes[class_codes >= 0]
    counts = np.bincount(labelled, minlength=n_classes).astype(np.float64)
    weights = np.ones(n_classes)
    present = counts > 0
    weights[present] = labelled.size / (present.sum() * counts[present])
    return weights.astype(np.float32)


def focal_loss(gamma: float, alpha) -> keras.losses.CategoricalFocalCrossentropy:
    """Categorical focal loss per cell: ``-alpha_k (1 - p_k)^gamma log p_k`` for the true class ``k``.

    Parameters
    ----------
    gamma
        Focusing parameter; 0 gives (alpha-weighted) cross-entropy.
    alpha
        One weight per class (e.g. :func:`balanced_class_weights`) or a single number.
    """
    alpha = [float(a) for a in np.atleast_1d(alpha)] if np.ndim(alpha) else float(alpha)
    return keras.losses.CategoricalFocalCrossentropy(alpha=alpha, gamma=gamma, reduction=None)


def mse_per_cell(target, reconstruction):
    """Mean squared error over genes, one value per cell."""
    return ops.mean(ops.square(ops.cast(target, "float32") - reconstruction), axis=-1)


def negative_binomial_per_cell(counts, fractions, library_size, theta):
    """Negative-binomial negative log-likelihood averaged over genes, one value per cell.

    Parameters
    ----------
    counts
        Raw counts of the target cells.
    fractions
        Decoder softmax output: the expected share of each gene in a cell's counts.
    library_size
        Total counts of each target cell over the model genes, shape ``(cells, 1)``.
    theta
        Inverse dispersion per gene (broadcast to the batch).
    """
    counts = ops.cast(counts, "float32")
    mean = fractions * ops.cast(library_size, "float32")
    log_theta_mean = ops.log(theta + mean + _EPSILON)
    log_likelihood = (
        theta * (ops.log(theta + _EPSILON) - log_theta_mean)
        + counts * (ops.log(mean + _EPSILON) - log_theta_mean)
        + tf.math.lgamma(counts + theta)  # keras.ops has no log-gamma
        - tf.math.lgamma(theta)
        - tf.math.lgamma(counts + 1.0)
    )
    return -ops.mean(log_likelihood, axis=-1)


def batch_cross_entropy_per_cell(batch_one_hot, batch_probabilities):
    """Cross-entropy of the batch head, one value per cell."""
    return keras.losses.categorical_crossentropy(
        ops.cast(batch_one_hot, "float32"), batch_probabilities
    )


def masked_mean(values, mask):
    """Mean of ``values`` over the cells where ``mask`` is 1 (0 when no cell is selected)."""
    mask = ops.cast(mask, values.dtype)
    return ops.sum(values * mask) / ops.maximum(ops.sum(mask), 1.0)
