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
        _draw_partners(targets, members, members, batch_codes, rng, min_partners)
    return targets


def _draw_partners(
    targets: np.ndarray,
    cells: np.ndarray,
    partners: np.ndarray,
    batch_codes: np.ndarray,
    rng: np.random.Generator,
    min_partners: int,
) -> None:
    """Set ``targets[cells]`` to draws from ``partners``, batch by batch: from the partners in the
    other batches when there are at least ``min_partners`` of them, else from all of them."""
    cell_batches, partner_batches = batch_codes[cells], batch_codes[partners]
    for batch in np.unique(cell_batches):
        in_batch = cells[cell_batches == batch]
        elsewhere = partners[partner_batches != batch]
        pool = elsewhere if elsewhere.size >= max(min_partners, 1) else partners
        targets[in_batch] = rng.choice(pool, size=in_batch.size)


def pseudo_label_targets(
    targets: np.ndarray,
    pseudo_codes: np.ndarray,
    class_codes: np.ndarray,
    batch_codes: np.ndarray,
    rng: np.random.Generator,
    min_partners: int = MIN_PARTNERS,
) -> np.ndarray:
    """``targets`` with each pseudo-labelled cell sent to a labelled cell of its predicted type.

    Parameters
    ----------
    targets
        Partners from :func:`permutation_targets` (left as they are for every other cell).
    pseudo_codes
        Predicted class of the unlabelled and query cells the classifier is sure of, ``-1``
        elsewhere (labelled cells included).
    class_codes, batch_codes
        The labelled training cells' classes (``-1`` for the others) and every cell's batch.

    Returns
    -------
    A copy of ``targets``. A pseudo-labelled cell reconstructs a labelled cell of its predicted
    type from another batch when there are at least ``min_partners`` of them, else from any batch;
    a type without labelled cells leaves the cell reconstructing itself. So query cells stop
    asking the latent to remember what their batch looks like.
    """
    targets = targets.copy()
    for code in np.unique(pseudo_codes[pseudo_codes >= 0]):
        partners = np.flatnonzero(class_codes == code)
        if partners.size == 0:
            continue
        cells = np.flatnonzero(pseudo_codes == code)
        _draw_partners(targets, cells, partners, batch_codes, rng, min_partners)
    return targets
