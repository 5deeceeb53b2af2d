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


def batch_confusion_per_cell(batch_probabilities):
    """Cross-entropy of the batch head against the uniform distribution, one value per cell.

    Minimal (``log n_batches``) when the head cannot tell any batch from another; unlike the
    reversed cross-entropy it is not lowered by a head that is confidently wrong.
    """
    n_batches = ops.cast(ops.shape(batch_probabilities)[-1], "float32")
    return -ops.sum(ops.log(batch_probabilities + _EPSILON), axis=-1) / n_batches


def class_batch_alignment(latent, memberships, batch_one_hot):
    """How far each (cell type, batch) centroid of the latent lies from its cell type's centroid.

    For every type, the mean latent of its cells in each batch is compared with the mean over
    all its cells. The squared distances, averaged with the cells as weights, are divided by
    the spread of the cells around their type's centroid (held constant): the share of the
    within-type variance that the batches explain, between 0 (each type sits at the same place
    in every batch) and 1 (the batches explain all of it). A type seen in one batch adds 0.

    Parameters
    ----------
    latent
        ``(cells, latent_dim)``.
    memberships
        ``(cells, classes)`` weights: one-hot labels, confident pseudo-labels, or zeros for a
        cell that takes no part.
    batch_one_hot
        ``(cells, batches)``.
    """
    latent = ops.cast(latent, "float32")
    memberships = ops.cast(memberships, "float32")
    batch_one_hot = ops.cast(batch_one_hot, "float32")
    counts = ops.einsum("ic,ib->cb", memberships, batch_one_hot)
    sums = ops.einsum("ic,ib,id->cbd", memberships, batch_one_hot, latent)
    batch_means = sums / ops.maximum(counts, 1.0)[..., None]
    class_counts = ops.sum(counts, axis=1)
    class_means = ops.sum(sums, axis=1) / ops.maximum(class_counts, 1.0)[..., None]
    shifts = ops.sum(counts * ops.sum(ops.square(batch_means - class_means[:, None, :]), axis=-1))
    spread = ops.sum(
        memberships * ops.sum(ops.square(latent[:, None, :] - class_means[None, :, :]), axis=-1)
    )
    return shifts / ops.stop_gradient(ops.maximum(spread, _EPSILON))


def class_batch_kernel_alignment(latent, memberships, batch_one_hot):
    """How far each (cell type, batch) distribution of the latent lies from its cell type's.

    The squared maximum mean discrepancy (MMD) between the cells of a type in one batch and
    all cells of that type, with a Gaussian kernel averaged over three bandwidths around that
    type's own spread (held constant, so the loss does not shrink with the latent's scale, and a
    tight type is judged at its own scale, not at the scale of a wide one).
    Unlike centroids, the kernel sees the whole shape: a batch cannot sit in its own corner of
    its type's cloud. Averaged with the (type, batch) group sizes as weights over the groups of
    two or more cells; a type seen in one batch adds 0. Arguments as for
    :func:`class_batch_alignment`.
    """
    latent = ops.cast(latent, "float32")
    memberships = ops.cast(memberships, "float32")
    batch_one_hot = ops.cast(batch_one_hot, "float32")
    counts = ops.einsum("ic,ib->cb", memberships, batch_one_hot)
    class_counts = ops.sum(counts, axis=1)
    group_weights = ops.einsum("ic,ib->icb", memberships, batch_one_hot) / ops.maximum(counts, 1.0)
    class_weights = memberships / ops.maximum(class_counts, 1.0)
    kernels = _type_kernels(latent, latent, _type_bandwidths(latent, class_weights))
    group_group = ops.einsum("icb,cij,jcb->cb", group_weights, kernels, group_weights)
    group_class = ops.einsum("icb,cij,jc->cb", group_weights, kernels, class_weights)
    class_class = ops.einsum("ic,cij,jc->c", class_weights, kernels, class_weights)
    discrepancy = group_group - 2.0 * group_class + class_class[:, None]
    groups = ops.cast(counts >= 2.0, "float32") * counts
    return ops.sum(groups * discrepancy) / ops.maximum(ops.sum(groups), 1.0)


def class_kernel_mmd(source, source_memberships, target, target_memberships):
    """Squared MMD between the ``source`` and the ``target`` cells of each class, one value per class.

    A Gaussian kernel averaged over three bandwidths around each class's spread in ``target``
    (held constant): a tight type is judged at its own scale. ``*_memberships`` are
    ``(cells, classes)`` weights (one-hot or zero rows); a class with no source or no target
    cell gives 0. Returns ``(discrepancies, source_counts)``, both of shape ``(classes,)``.
    """
    source, target = ops.cast(source, "float32"), ops.cast(target, "float32")
    source_counts = ops.sum(source_memberships, axis=0)
    target_counts = ops.sum(target_memberships, axis=0)
    source_weights = source_memberships / ops.maximum(source_counts, 1.0)
    target_weights = target_memberships / ops.maximum(target_counts, 1.0)
    bandwidths = _type_bandwidths(target, target_weights)

    def kernel_mean(left, left_weights, right, right_weights):
        kernels = _type_kernels(left, right, bandwidths)
        return ops.einsum("ic,cij,jc->c", left_weights, kernels, right_weights)

    discrepancies = (
        kernel_mean(source, source_weights, source, source_weights)
        - 2.0 * kernel_mean(source, source_weights, target, target_weights)
        + kernel_mean(target, target_weights, target, target_weights)
    )
    present = ops.cast((source_counts > 0) & (target_counts > 0), "float32")
    return discrepancies * present, source_counts


def memory_kernel_alignment(latent, types, batches, conditions, memory):
    """How much closer each cell lies to its own batch's cells of its type than to other batches'.

    For a cell of type ``t`` in batch ``b`` (condition ``c``), the mean Gaussian kernel to the
    remembered cells of ``t`` in ``b`` minus the mean kernel to the remembered cells of ``t`` in
    the other batches of condition ``c``: the witness function of the maximum mean discrepancy
    (MMD) between type ``t`` in ``b`` and in the other batches, evaluated at the cell. Its mean
    over the cells of ``(t, b)`` estimates that discrepancy without bias (the remembered cells
    come from earlier steps, never the cell itself), so it is 0 when the batches agree, whatever
    the number of cells; its gradient is the MMD's with the remembered cells held still.

    The memory (:class:`~scpermut.model.train.memory.AlignmentMemory`) holds recent latent
    coordinates of every type across many mini-batches, so a (type, batch) group is judged
    against the whole type even when the mini-batch holds no other batch of it; the cost is
    ``cells x memory slots`` per step, whatever the number of types and batches. The kernel's
    bandwidths are three multiples of the type's own spread (held constant), so a tight type is
    judged at its own scale.

    Parameters
    ----------
    latent
        ``(cells, latent_dim)``.
    types, batches, conditions
        ``(cells,)`` integer codes; a type of ``-1`` leaves the cell out (no label, no sure
        pseudo-label, or a novel-looking cell).
    memory
        ``(latent, types' memory batch codes, condition codes, squared bandwidths)``:
        ``(types, slots, latent_dim)``, ``(types, slots)`` (``-1``: empty slot), ``(types, slots)``
        and ``(types,)``.

    Returns
    -------
    The mean witness over the cells whose type has remembered cells both in their own batch
    and in another batch of their condition (0 when there are none).
    """
    memory_latent, memory_batches, memory_conditions, bandwidths = memory
    latent = ops.cast(latent, "float32")
    aligned = types >= 0
    rows = ops.maximum(types, 0)
    remembered = ops.take(memory_latent, rows, axis=0)
    slot_batches = ops.take(memory_batches, rows, axis=0)
    slot_conditions = ops.take(memory_conditions, rows, axis=0)
    comparable = (slot_batches >= 0) & (slot_conditions == conditions[:, None])
    own = ops.cast(comparable & (slot_batches == batches[:, None]), "float32")
    other = ops.cast(comparable & (slot_batches != batches[:, None]), "float32")
    distances = ops.sum(ops.square(latent[:, None, :] - remembered), axis=-1)
    scale = ops.take(bandwidths, rows, axis=0)[:, None]
    kernels = _multiscale_kernel(distances, scale)
    n_own, n_other = ops.sum(own, axis=1), ops.sum(other, axis=1)
    witness = ops.sum(kernels * own, axis=1) / ops.maximum(n_own, 1.0) - ops.sum(
        kernels * other, axis=1
    ) / ops.maximum(n_other, 1.0)
    counted = ops.cast(aligned & (n_own > 0) & (n_other > 0), "float32")
    return ops.sum(witness * counted) / ops.maximum(ops.sum(counted), 1.0)


# The Gaussian kernels' bandwidths, as multiples of a type's own squared spread.
_KERNEL_SCALES = (0.5, 1.0, 2.0)


def _multiscale_kernel(distances, bandwidths):
    """The Gaussian kernel of squared ``distances`` averaged over :data:`_KERNEL_SCALES` x
    ``bandwidths`` (broadcast against each other)."""
    return sum(ops.exp(-distances / (bandwidths * scale)) for scale in _KERNEL_SCALES) / float(len(_KERNEL_SCALES))


def _type_bandwidths(latent, weights):
    """Each type's squared bandwidth, held constant: two of its cells lie on average 2 x its
    variance apart. ``weights`` are ``(cells, types)``, each type's column summing to 1 (or 0)."""
    means = ops.einsum("ic,id->cd", weights, latent)
    within = ops.einsum(
        "ic,ic->c",
        weights,
        ops.sum(ops.square(latent[:, None, :] - means[None, :, :]), axis=-1),
    )
    return ops.stop_gradient(ops.maximum(2.0 * within, _EPSILON))


def _type_kernels(left, right, bandwidths):
    """``(types, left cells, right cells)``: the kernel between every pair at each type's bandwidth."""
    left_norms = ops.sum(ops.square(left), axis=-1)
    # One norm node when both sides are the same cells: two would split the gradient into two
    # contributions summed in another order, changing training in its last bits.
    right_norms = left_norms if right is left else ops.sum(ops.square(right), axis=-1)
    distances = ops.maximum(
        left_norms[:, None] + right_norms[None, :] - 2.0 * ops.matmul(left, ops.transpose(right)),
        0.0,
    )
    return _multiscale_kernel(distances[None, :, :], bandwidths[:, None, None])
