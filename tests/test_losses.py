"""Loss terms: focal loss against cross-entropy, class weights, masking, negative binomial."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scpermut.model import losses

ONE_HOT = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 0]], np.float32)
PROBABILITIES = np.array(
    [[0.9, 0.05, 0.05], [0.3, 0.4, 0.3], [0.1, 0.1, 0.8], [0.2, 0.5, 0.3]], np.float32
)


def test_focal_loss_with_gamma_zero_equals_cross_entropy():
    focal = losses.focal_loss(gamma=0.0, alpha=1.0)(ONE_HOT, PROBABILITIES)
    cross_entropy = -np.log((ONE_HOT * PROBABILITIES).sum(axis=1))
    np.testing.assert_allclose(np.asarray(focal), cross_entropy, rtol=1e-6)


def test_focal_loss_down_weights_easy_examples():
    gamma = 2.0
    focal = np.asarray(losses.focal_loss(gamma=gamma, alpha=1.0)(ONE_HOT, PROBABILITIES))
    cross_entropy = -np.log((ONE_HOT * PROBABILITIES).sum(axis=1))
    true_probability = (ONE_HOT * PROBABILITIES).sum(axis=1)
    np.testing.assert_allclose(focal, (1 - true_probability) ** gamma * cross_entropy, rtol=1e-5)
    ratio = focal / cross_entropy
    easy, hard = 0, 3  # p = 0.9 and p = 0.2 for the true class
    assert ratio[easy] < 0.02 < 0.5 < ratio[hard]


def test_focal_loss_alpha_weights_each_class():
    plain = np.asarray(losses.focal_loss(gamma=2.0, alpha=1.0)(ONE_HOT, PROBABILITIES))
    weighted = np.asarray(
        losses.focal_loss(gamma=2.0, alpha=[2.0, 1.0, 0.5])(ONE_HOT, PROBABILITIES)
    )
    np.testing.assert_allclose(weighted, plain * np.array([2.0, 1.0, 0.5, 2.0]), rtol=1e-6)


def test_balanced_class_weights_average_to_one_and_ignore_unlabelled_cells():
    codes = np.array([0, 0, 0, 0, 0, 0, 1, 1, -1, -1])
    weights = losses.balanced_class_weights(codes, n_classes=3)
    np.testing.assert_allclose(weights, [8 / 12, 8 / 4, 1.0], rtol=1e-6)
    labelled = codes[codes >= 0]
    assert weights[labelled].mean() == pytest.approx(1.0)


def test_masked_mean_counts_only_selected_cells():
    values = np.array([1.0, 2.0, 10.0], np.float32)
    assert float(losses.masked_mean(values, [1.0, 1.0, 0.0])) == pytest.approx(1.5)
    assert float(losses.masked_mean(values, [0.0, 0.0, 0.0])) == 0.0


def test_mse_per_cell_averages_over_genes():
    target = np.array([[1.0, 2.0], [0.0, 0.0]], np.float32)
    reconstruction = np.array([[1.0, 0.0], [1.0, 1.0]], np.float32)
    np.testing.assert_allclose(np.asarray(losses.mse_per_cell(target, reconstruction)), [2.0, 1.0])


def test_negative_binomial_matches_scipy():
    counts = np.array([[0, 3, 10], [5, 1, 0]], np.float32)
    fractions = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    library = np.array([[20.0], [8.0]], np.float32)
    theta = np.broadcast_to(np.array([0.5, 2.0, 10.0], np.float32), counts.shape)
    mean = fractions * library
    expected = -stats.nbinom.logpmf(counts, theta, theta / (theta + mean)).mean(axis=1)
    np.testing.assert_allclose(
        np.asarray(losses.negative_binomial_per_cell(counts, fractions, library, theta)),
        expected,
        rtol=1e-4,
    )
