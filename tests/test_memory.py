"""The alignment memory: each type's recent latent coordinates, in ring order, restorable."""

from __future__ import annotations

import numpy as np

from scpermut.model.train.memory import AlignmentMemory


def test_each_type_fills_its_own_slots_in_order_and_wraps_around():
    memory = AlignmentMemory(n_types=2, slots=3, latent_dim=1)
    latent = np.arange(5, dtype=np.float32)[:, None]
    types = np.array([0, 1, 0, -1, 0])
    memory.remember(latent, types, np.array([0, 1, 2, 3, 4]), np.zeros(5, np.int64))
    remembered, batches, _, _ = (np.asarray(value) for value in memory.contents())
    np.testing.assert_array_equal(remembered[0, :, 0], [0, 2, 4])
    np.testing.assert_array_equal(batches[1], [1, -1, -1])  # the untyped cell is never written
    memory.remember(np.array([[7.0], [8.0]], np.float32), np.array([0, 0]), np.array([5, 6]), np.zeros(2, np.int64))
    np.testing.assert_array_equal(np.asarray(memory.contents()[0])[0, :, 0], [7, 8, 4])


def test_a_step_with_more_cells_than_slots_keeps_the_first_ones_and_state_restores():
    memory = AlignmentMemory(n_types=1, slots=2, latent_dim=2)
    latent = np.arange(8, dtype=np.float32).reshape(4, 2)
    memory.remember(latent, np.zeros(4, np.int64), np.arange(4), np.zeros(4, np.int64))
    np.testing.assert_array_equal(np.asarray(memory.contents()[1])[0], [0, 1])
    saved = memory.state()
    memory.remember(latent[2:], np.zeros(2, np.int64), np.array([9, 9]), np.zeros(2, np.int64))
    memory.restore(saved)
    np.testing.assert_array_equal(np.asarray(memory.contents()[1])[0], [0, 1])


def test_bandwidths_follow_each_types_spread():
    memory = AlignmentMemory(n_types=2, slots=4, latent_dim=1)
    latent = np.array([[-1.0], [1.0], [-10.0], [10.0]], np.float32)
    memory.remember(latent, np.array([0, 0, 1, 1]), np.zeros(4, np.int64), np.zeros(4, np.int64))
    bandwidths = np.asarray(memory.contents()[3])
    np.testing.assert_allclose(bandwidths, [2.0, 200.0], rtol=1e-6)
