"""Temperature scaling: fitted on validation cells, lowers the calibration error, keeps the labels."""

from __future__ import annotations

import numpy as np
import pytest

from scpermut.model import calibration


def _overconfident(n: int = 400, seed: int = 0):
    """3 classes, the top class right 60 % of the time but announced at ~0.97."""
    rng = np.random.default_rng(seed)
    codes = rng.integers(0, 3, n)
    predicted = np.where(rng.random(n) < 0.6, codes, (codes + 1) % 3)
    probabilities = np.full((n, 3), 0.015)
    probabilities[np.arange(n), predicted] = 0.97
    return probabilities.astype(np.float32), codes


def test_temperature_scaling_softens_an_overconfident_model_and_keeps_its_labels():
    probabilities, codes = _overconfident()
    result = calibration.calibrate(probabilities, codes)
    assert result["temperature"] > 1.5
    assert result["ece_after"] < result["ece_before"] / 3
    assert result["nll_after"] < result["nll_before"]
    scaled = calibration.apply_temperature(probabilities, result["temperature"])
    np.testing.assert_array_equal(scaled.argmax(axis=1), probabilities.argmax(axis=1))
    np.testing.assert_allclose(scaled.sum(axis=1), 1.0, rtol=1e-5)
    assert scaled.max(axis=1).mean() == pytest.approx(0.6, abs=0.05)


def test_a_calibrated_model_keeps_temperature_one_and_the_fit_is_deterministic():
    rng = np.random.default_rng(1)
    probabilities = rng.dirichlet(np.ones(3), 500).astype(np.float32)
    codes = np.array([rng.choice(3, p=row) for row in probabilities])
    first = calibration.calibrate(probabilities, codes)
    assert first == calibration.calibrate(probabilities, codes)
    assert first["temperature"] == pytest.approx(1.0, abs=0.2)


def test_a_validation_set_without_enough_errors_leaves_the_probabilities_alone():
    """All-correct validation cells would drive the fitted T towards 0 (false certainty)."""
    rng = np.random.default_rng(2)
    codes = rng.integers(0, 3, 200)
    probabilities = np.full((200, 3), 0.2, dtype=np.float32)
    probabilities[np.arange(200), codes] = 0.6
    probabilities[:3] = np.roll(probabilities[:3], 1, axis=1)  # 3 errors: below MIN_ERRORS
    result = calibration.calibrate(probabilities, codes)
    assert result["n_errors"] == 3
    assert result["temperature"] == 1.0
    assert "too few" in result["skipped"]
    assert result["ece_after"] == result["ece_before"]
    assert calibration.fit_temperature(probabilities, codes) < 0.5  # what an unguarded fit would do
