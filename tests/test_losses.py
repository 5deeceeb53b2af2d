"""Loss terms: focal loss against cross-entropy, class weights, masking, negative binomial,
batch confusion and the class-batch alignments (in the mini-batch, and against the memory)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from scpermut.model import losses
from scpermut.model.train.memory import AlignmentMemory

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


def _one_hot(codes, width):
    return np.eye(width, dtype=np.float32)[codes]


def test_confusion_is_lowest_for_a_uniform_batch_head_and_punishes_confident_mistakes():
    uniform = losses.batch_confusion_per_cell(np.full((2, 4), 0.25, np.float32)).numpy()
    np.testing.assert_allclose(uniform, np.log(4.0), rtol=1e-5)
    wrong = np.array([[0.97, 0.01, 0.01, 0.01]], np.float32)  # sure, and of the wrong batch
    assert losses.batch_confusion_per_cell(wrong).numpy()[0] > uniform[0] + 0.5


def test_alignment_is_zero_when_every_type_sits_at_the_same_place_in_every_batch():
    types = np.repeat([0, 1], 8)
    batches = np.tile([0, 1], 8)
    spread = np.tile([-1.0, -1.0, 1.0, 1.0], 4)[:, None]  # the same spread in both batches
    latent = (np.eye(3)[types] * 5 + spread).astype(np.float32)
    aligned = losses.class_batch_alignment(latent, _one_hot(types, 2), _one_hot(batches, 2))
    assert float(aligned) == pytest.approx(0.0, abs=1e-6)
    shifted = latent + batches[:, None].astype(np.float32) * np.float32(2.0)
    misaligned = losses.class_batch_alignment(shifted, _one_hot(types, 2), _one_hot(batches, 2))
    # A shift of 2 per dimension against a spread of 1: the batch explains half of it.
    assert float(misaligned) == pytest.approx(0.5, rel=1e-5)
    # Scale-free: shrinking the latent does not lower it.
    smaller = losses.class_batch_alignment(shifted * 0.1, _one_hot(types, 2), _one_hot(batches, 2))
    assert float(smaller) == pytest.approx(float(misaligned), rel=1e-4)


def test_alignment_ignores_cells_without_a_type_and_types_seen_in_one_batch():
    types = np.array([0, 0, 1, 1])
    batches = np.array([0, 1, 0, 0])  # type 1 only in batch 0
    latent = np.array([[0.0], [1.0], [5.0], [9.0]], np.float32)
    memberships = _one_hot(types, 2)
    full = float(losses.class_batch_alignment(latent, memberships, _one_hot(batches, 2)))
    # Type 0: shift 0.25 per cell; spread over all cells = 0.25 * 2 + 4 * 2.
    assert full == pytest.approx(0.5 / 8.5, rel=1e-5)
    memberships[1] = 0.0  # cell 1 takes no part: type 0 is now in one batch only
    assert float(losses.class_batch_alignment(latent, memberships, _one_hot(batches, 2))) == 0.0


def test_kernel_alignment_sees_a_batch_that_only_spreads_its_cells_more():
    types = np.zeros(8, dtype=np.int64)
    batches = np.tile([0, 1], 4)
    offsets = np.repeat([-1.0, 1.0], 4)  # both batches centred on 0 ...
    latent = (offsets * np.where(batches == 1, 3.0, 1.0))[:, None].astype(np.float32)  # ... batch 1 wider
    args = (latent, _one_hot(types, 1), _one_hot(batches, 2))
    assert float(losses.class_batch_alignment(*args)) == pytest.approx(0.0, abs=1e-6)
    assert float(losses.class_batch_kernel_alignment(*args)) > 0.1


def test_kernel_alignment_compares_whole_distributions_not_only_centroids():
    rng = np.random.default_rng(0)
    types = np.repeat([0, 1], 200)
    batches = np.tile([0, 1], 200)
    memberships, batch_one_hot = _one_hot(types, 2), _one_hot(batches, 2)
    latent = (rng.normal(size=(400, 4)) + types[:, None] * 8).astype(np.float32)
    mixed = float(losses.class_batch_kernel_alignment(latent, memberships, batch_one_hot))
    shifted = latent + batches[:, None].astype(np.float32) * np.float32(2.0)
    apart = float(losses.class_batch_kernel_alignment(shifted, memberships, batch_one_hot))
    assert mixed < 0.02 and apart > 5 * mixed
    # Scale-free, like the centroid alignment.
    smaller = losses.class_batch_kernel_alignment(shifted * 0.1, memberships, batch_one_hot)
    assert float(smaller) == pytest.approx(apart, rel=1e-3)
    # Batch 1 split into two far clumps around the same centroid: centroids see nothing.
    clumps = latent.copy()
    clumps[batches == 1, 0] += np.where(np.arange(200) % 2 == 0, 3.0, -3.0)
    assert float(losses.class_batch_alignment(clumps, memberships, batch_one_hot)) < 0.02
    assert float(losses.class_batch_kernel_alignment(clumps, memberships, batch_one_hot)) > 5 * mixed


def test_kernel_alignment_judges_each_type_at_its_own_scale():
    rng = np.random.default_rng(1)
    types = np.repeat([0, 1], 200)
    batches = np.tile([0, 1], 200)
    memberships, batch_one_hot = _one_hot(types, 2), _one_hot(batches, 2)
    # Type 0 is wide; type 1 is tight, and its batches sit apart on its own scale.
    spread = np.where(types == 0, 10.0, 0.1)[:, None]
    latent = (rng.normal(size=(400, 4)) * spread + types[:, None] * 100).astype(np.float32)
    mixed = float(losses.class_batch_kernel_alignment(latent, memberships, batch_one_hot))
    latent[types == 1] += (batches[types == 1, None] * 0.3).astype(np.float32)
    apart = float(losses.class_batch_kernel_alignment(latent, memberships, batch_one_hot))
    assert apart > 5 * mixed


def _memory(latent, types, batches, conditions=None, n_types=None, slots=4096):
    """An alignment memory holding the given cells (conditions all 0 unless given)."""
    conditions = np.zeros_like(batches) if conditions is None else conditions
    memory = AlignmentMemory(n_types or int(types.max()) + 1, slots, latent.shape[1])
    memory.remember(latent, types, batches, conditions)
    return memory.contents()


def _alignment(latent, types, batches, memory, conditions=None):
    conditions = np.zeros_like(batches) if conditions is None else conditions
    return float(losses.memory_kernel_alignment(latent, types, batches, conditions, memory))


def _two_types(rng, n_cells, shift=0.0):
    types = np.repeat([0, 1], n_cells // 2)
    batches = np.tile([0, 1], n_cells // 2)
    latent = rng.normal(size=(n_cells, 4)) + types[:, None] * 8 + batches[:, None] * shift
    return latent.astype(np.float32), types, batches


def test_memory_alignment_is_near_zero_without_a_batch_effect_and_grows_with_one():
    rng = np.random.default_rng(0)
    remembered = _memory(*_two_types(rng, 2000))
    mixed = _alignment(*_two_types(rng, 400), remembered)
    # Unbiased: no floor that a small mini-batch would add.
    assert abs(mixed) < 0.01
    shifted_memory = _memory(*_two_types(rng, 2000, shift=1.0))
    apart = _alignment(*_two_types(rng, 400, shift=1.0), shifted_memory)
    assert apart > 0.05 and apart > 10 * abs(mixed)


def test_memory_alignment_is_scale_free():
    rng = np.random.default_rng(1)
    remembered_cells = _two_types(rng, 2000, shift=1.0)
    cells = _two_types(rng, 400, shift=1.0)
    full = _alignment(*cells, _memory(*remembered_cells))
    small_memory = _memory(remembered_cells[0] * 0.1, *remembered_cells[1:])
    small = _alignment(cells[0] * 0.1, *cells[1:], small_memory)
    assert small == pytest.approx(full, rel=1e-3)


def test_memory_alignment_ignores_untyped_cells_lone_batches_and_other_conditions():
    rng = np.random.default_rng(2)
    latent, types, batches = _two_types(rng, 400, shift=1.0)
    remembered = _memory(latent, types, batches)
    assert _alignment(latent, np.full_like(types, -1), batches, remembered) == 0.0
    # Type 0 remembered in batch 0 only: nothing to compare its cells with.
    only_batch_0 = _memory(latent[batches == 0], types[batches == 0], batches[batches == 0])
    assert _alignment(latent, types, batches, only_batch_0) == 0.0
    # Batch 1 is another condition: batch 0 is never compared with it.
    conditions = batches.copy()
    by_condition = _memory(latent, types, batches, conditions)
    assert _alignment(latent, types, batches, by_condition, conditions) == 0.0


def test_memory_alignment_pulls_a_shifted_batch_towards_the_others():
    import tensorflow as tf

    rng = np.random.default_rng(3)
    latent, types, batches = _two_types(rng, 400, shift=2.0)
    remembered = _memory(latent, types, batches)
    cells = tf.Variable(latent)
    with tf.GradientTape() as tape:
        loss = losses.memory_kernel_alignment(cells, types, batches, np.zeros_like(batches), remembered)
    step = -tape.gradient(loss, cells).numpy()
    # Gradient descent moves batch-1 cells down their shift axis, batch-0 cells up it.
    assert step[batches == 1].sum(axis=0).mean() < 0 < step[batches == 0].sum(axis=0).mean()

