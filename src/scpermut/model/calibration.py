"""Temperature scaling of the class probabilities, fitted on the validation cells.

One number ``T`` divides the log-probabilities before the softmax: the predicted class never
changes, only how sure the model says it is. ``T`` minimises the negative log-likelihood of
the validation cells (a bounded 1-D search, deterministic). The expected calibration error
(ECE) before and after is recorded so that users can see what it did.
"""

from __future__ import annotations

import numpy as np

_EPSILON = 1e-12
_LOG_T_RANGE = (-3.0, 3.0)  # T between 0.05 and 20
# With (almost) every validation cell right, the likelihood keeps falling as T -> 0: the fit
# would announce near-certainty for every query cell on no evidence. Below this many
# misclassified validation cells the probabilities are left as they are.
MIN_ERRORS = 5


def apply_temperature(probabilities: np.ndarray, temperature: float) -> np.ndarray:
    """Probabilities re-softmaxed from ``log(p) / temperature`` (rows sum to 1, argmax unchanged)."""
    if temperature == 1.0:
        return probabilities
    logits = np.log(np.clip(probabilities, _EPSILON, 1.0)).astype(np.float64) / temperature
    logits -= logits.max(axis=1, keepdims=True)
    scaled = np.exp(logits)
    return (scaled / scaled.sum(axis=1, keepdims=True)).astype(probabilities.dtype)


def negative_log_likelihood(probabilities: np.ndarray, codes: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(codes.size), codes], _EPSILON, 1.0))))


def expected_calibration_error(probabilities: np.ndarray, codes: np.ndarray, n_bins: int = 10) -> float:
    """Mean |accuracy - confidence| over equal-width confidence bins, weighted by their cells."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == codes
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    error = 0.0
    for index in np.unique(bins):
        members = bins == index
        error += members.sum() * abs(correct[members].mean() - confidence[members].mean())
    return float(error / max(codes.size, 1))


def fit_temperature(probabilities: np.ndarray, codes: np.ndarray, iterations: int = 60) -> float:
    """The temperature minimising the validation negative log-likelihood (golden-section on log T)."""
    def loss(log_t: float) -> float:
        return negative_log_likelihood(apply_temperature(probabilities, float(np.exp(log_t))), codes)

    low, high = _LOG_T_RANGE
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    loss_a, loss_b = loss(a), loss(b)
    for _ in range(iterations):
        if loss_a < loss_b:
            high, b, loss_b = b, a, loss_a
            a = high - ratio * (high - low)
            loss_a = loss(a)
        else:
            low, a, loss_a = a, b, loss_b
            b = low + ratio * (high - low)
            loss_b = loss(b)
    best = (low + high) / 2.0
    # Keep T = 1 unless scaling really lowers the likelihood loss.
    return float(np.exp(best)) if loss(best) < loss(0.0) else 1.0


def calibrate(probabilities: np.ndarray, codes: np.ndarray) -> dict:
    """Fit the temperature on labelled cells; return it with the ECE and NLL before and after.

    Fewer than :data:`MIN_ERRORS` misclassified cells give no evidence of over- or
    under-confidence: the temperature stays 1 and ``"skipped"`` says why.
    """
    n_errors = int((probabilities.argmax(axis=1) != codes).sum())
    skipped = None
    if n_errors < MIN_ERRORS:
        temperature = 1.0
        skipped = f"{n_errors} misclassified validation cells (fewer than {MIN_ERRORS}): too few to fit a temperature"
    else:
        temperature = fit_temperature(probabilities, codes)
    scaled = apply_temperature(probabilities, temperature)
    return {
        "method": "temperature scaling on the validation cells",
        "skipped": skipped,
        "n_errors": n_errors,
        "temperature": round(temperature, 6),
        "n_cells": int(codes.size),
        "ece_before": expected_calibration_error(probabilities, codes),
        "ece_after": expected_calibration_error(scaled, codes),
        "nll_before": negative_log_likelihood(probabilities, codes),
        "nll_after": negative_log_likelihood(scaled, codes),
    }
