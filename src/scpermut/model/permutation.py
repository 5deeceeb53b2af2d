"""Permutation targets: each labelled cell reconstructs another cell of its own type.

The draw depends only on the seed and the epoch, so a training run (and a resumed one)
sees exactly the same targets every time.
"""

from __future__ import annotations

import numpy as np


MIN_PARTNERS = 5


def epoch_rng(seed: int, *stream: int) -> np.random.Generator:
    """Return a generator that depends only on ``seed`` and the integers in ``stream`` (phase, epoch)."""
    return np.random.default_rng([seed, *stream])


def permutation_targets(
    class_codes: np.ndarray,
    batch_codes: np.ndarray,
    rng: np.random.Generator,
    across_batches: bool = True,
    min_partners: int = MIN_PARTNERS,
) -> np.ndarray:
    """Index of the cell each cell should reconstruct.

    Parameters
    ----------
    class_codes
        Class of each cell; a negative code marks a cell that is not used as labelled
        (unlabelled, query or validation): it reconstructs itself.
    batch_codes
        Batch of each cell.
    rng
        Source of randomness (see :func:`epoch_rng`).
    across_batches
        Draw the partner from another batch whenever the class has at least ``min_partners``
        cells in the other batches; otherwise from any cell of the class (itself included),
        so a handful of cells elsewhere never become every cell's only target.
    min_partners
        Smallest pool of other-batch partners worth drawing from.

    Returns
    -------
    Integer array ``targets`` with ``class_codes[targets[i]] == class_codes[i]`` for labelled
    cells and ``targets[i] == i`` for the others.
    """
    targets = np.arange(class_codes.size)
    for code in np.unique(class_codes[class_codes >= 0]):
        members = np.flatnonzero(class_codes == code)
        if not across_batches:
            targets[members] = rng.choice(members, size=members.size)
            continue
        member_batches = batch_codes[members]
        for batch in np.unique(member_batches):
            in_batch = members[member_batches == batch]
            elsewhere = members[member_batches != batch]
            pool = elsewhere if elsewhere.size >= max(min_partners, 1) else members
            targets[in_batch] = rng.choice(pool, size=in_batch.size)
    return targets
