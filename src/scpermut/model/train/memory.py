"""``AlignmentMemory``: recent latent coordinates of every cell type, kept across training steps.

The alignment (:func:`scpermut.model.losses.memory_kernel_alignment`) compares each cell with
the remembered cells of its type in its own batch and in the others. A 128-cell mini-batch of
an atlas with 60 types and 100 batches rarely holds two batches of one type; the memory holds
the last ``slots`` cells of each type seen over many steps, so every (type, batch) group is
judged against the whole type, at a cost that does not depend on the mini-batch's composition.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from keras import ops

_EMPTY = -1


class AlignmentMemory:
    """A ring buffer of ``slots`` latent coordinates per cell type, with their batch and condition.

    The state is four variables (``state`` / ``restore``), so a checkpoint resumes the same
    memory and the run stays exact.
    """

    def __init__(self, n_types: int, slots: int, latent_dim: int):
        self.slots = slots
        self.latent = tf.Variable(tf.zeros((n_types, slots, latent_dim)), trainable=False)
        self.batches = tf.Variable(tf.fill((n_types, slots), _EMPTY), trainable=False)
        self.conditions = tf.Variable(tf.fill((n_types, slots), _EMPTY), trainable=False)
        self.next_slot = tf.Variable(tf.zeros((n_types,), tf.int32), trainable=False)

    def contents(self):
        """What the alignment reads: latent, batch and condition codes, squared bandwidths."""
        filled = ops.cast(self.batches >= 0, "float32")
        counts = ops.maximum(ops.sum(filled, axis=1), 1.0)
        means = ops.sum(self.latent * filled[..., None], axis=1) / counts[:, None]
        spread = ops.sum(
            ops.sum(ops.square(self.latent - means[:, None, :]), axis=-1) * filled, axis=1
        ) / counts
        # Two cells of a type lie on average 2 x its variance apart.
        bandwidths = ops.stop_gradient(ops.maximum(2.0 * spread, 1e-6))
        return self.latent, self.batches, self.conditions, bandwidths

    def remember(self, latent, types, batches, conditions) -> None:
        """Write the cells with a type (``types >= 0``) into their type's next slots.

        Each type's cells take consecutive slots from its pointer on; cells beyond ``slots`` in
        one step are skipped, so no slot is written twice in a step (a repeated index would make
        the write order, and so the run, depend on the thread schedule).
        """
        types = tf.cast(types, tf.int32)
        member = types >= 0
        one_hot = tf.one_hot(tf.maximum(types, 0), tf.shape(self.latent)[0], dtype=tf.int32)
        one_hot *= tf.cast(member, tf.int32)[:, None]
        rank = tf.reduce_sum((tf.cumsum(one_hot, axis=0) - one_hot) * one_hot, axis=1)
        keep = member & (rank < self.slots)
        rows = tf.boolean_mask(types, keep)
        slots = (tf.gather(self.next_slot, rows) + tf.boolean_mask(rank, keep)) % self.slots
        indices = tf.stack([rows, slots], axis=1)
        self.latent.scatter_nd_update(indices, tf.boolean_mask(tf.cast(latent, tf.float32), keep))
        self.batches.scatter_nd_update(indices, tf.boolean_mask(tf.cast(batches, tf.int32), keep))
        self.conditions.scatter_nd_update(
            indices, tf.boolean_mask(tf.cast(conditions, tf.int32), keep)
        )
        written = tf.reduce_sum(one_hot * tf.cast(keep, tf.int32)[:, None], axis=0)
        self.next_slot.assign((self.next_slot + written) % self.slots)

    @property
    def variables(self) -> list[tf.Variable]:
        return [self.latent, self.batches, self.conditions, self.next_slot]

    def state(self) -> list[np.ndarray]:
        return [variable.numpy() for variable in self.variables]

    def restore(self, values: list[np.ndarray]) -> None:
        for variable, value in zip(self.variables, values, strict=True):
            variable.assign(value)
