"""Novelty: how unlike every cell type the model was trained on a cell's latent looks.

A cell's *score* is its smallest Mahalanobis distance to a type's centre (one covariance pooled
over the types, each type's distances divided by the median of its own cells'), and its
*novelty* the share of held-out labelled reference cells (a calibration batch, else the
validation cells) whose score is lower: about uniform between 0 and 1 for cells of known types,
near 1 for a type the reference never saw. Measured on label-free held-out cells, so no query
label is needed. Annotation reads the median novelty over each cell's neighbourhood
(:func:`neighbourhood_median`): a cluster of unseen cells stands out, a lone atypical cell of a
known type does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Reference scores kept (as quantiles) to turn a score into a novelty.
REFERENCE_QUANTILES = 2001
# A new batch whose median reconstruction score is above this quantile of the reference's is
# taken as shifted as a whole (docs/benchmarks_map.md, "The fallback rule").
BATCH_SHIFT_QUANTILE = 0.75
NEIGHBOURS = 15
# Cells a neighbourhood is looked up among (a seeded sample of the annotated ones beyond it).
MAX_NEIGHBOURHOOD_CELLS = 50_000


@dataclass
class NoveltyModel:
    """Type centres, the pooled precision, each type's median distance and the reference scores."""

    means: np.ndarray
    precision: np.ndarray
    type_scales: np.ndarray
    reference_scores: np.ndarray

    @classmethod
    def fit(cls, latent: np.ndarray, codes: np.ndarray, held_out_latent: np.ndarray) -> NoveltyModel:
        """Fit on labelled training cells (``codes`` >= 0 are used) and the held-out cells' latent."""
        latent = np.asarray(latent, np.float64)
        known = codes >= 0
        latent, codes = latent[known], codes[known]
        n_types = int(codes.max()) + 1
        means = np.zeros((n_types, latent.shape[1]))
        present = np.unique(codes)
        for code in present:
            means[code] = latent[codes == code].mean(axis=0)
        centred = latent - means[codes]
        covariance = centred.T @ centred / max(len(latent) - len(present), 1)
        ridge = 1e-3 * max(np.trace(covariance) / covariance.shape[0], 1e-12)
        precision = np.linalg.inv(covariance + ridge * np.eye(covariance.shape[0]))
        distances = _squared_distances(latent, means, precision)
        type_scales = np.ones(n_types)
        for code in present:
            type_scales[code] = max(float(np.median(distances[codes == code, code])), 1e-12)
        # Types absent from training (a class with no training cell) never match.
        type_scales[np.setdiff1d(np.arange(n_types), present)] = np.inf
        model = cls(means, precision, type_scales, np.zeros(0))
        held_out = model.scores(held_out_latent)
        if held_out.size == 0:
            held_out = model.scores(latent)
        model.reference_scores = np.quantile(held_out, np.linspace(0, 1, REFERENCE_QUANTILES))
        return model

    def scores(self, latent: np.ndarray) -> np.ndarray:
        """Each cell's smallest scaled distance to a type centre."""
        if len(latent) == 0:
            return np.zeros(0)
        distances = _squared_distances(np.asarray(latent, np.float64), self.means, self.precision)
        return (distances / self.type_scales).min(axis=1)

    def novelty(self, latent: np.ndarray) -> np.ndarray:
        """Share of the held-out reference cells whose score is below each cell's (0 to 1)."""
        ranks = np.searchsorted(self.reference_scores, self.scores(latent), side="left")
        return (ranks / self.reference_scores.size).astype(np.float32)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {
            "means": self.means,
            "precision": self.precision,
            "type_scales": self.type_scales,
            "reference_scores": self.reference_scores,
        }

    @classmethod
    def from_arrays(cls, arrays) -> NoveltyModel:
        return cls(**{name: np.asarray(arrays[name]) for name in ("means", "precision", "type_scales", "reference_scores")})


def _squared_distances(latent: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """``(cells, types)`` squared Mahalanobis distances, without a ``cells x types x dim`` array."""
    projected = latent @ precision
    own = np.einsum("id,id->i", projected, latent)
    centres = np.einsum("td,de,te->t", means, precision, means)
    return np.maximum(own[:, None] - 2.0 * projected @ means.T + centres[None, :], 0.0)


def neighbourhood_median(latent: np.ndarray, values: np.ndarray, seed: int, k: int = NEIGHBOURS) -> np.ndarray:
    """Each cell's median of ``values`` over its ``k`` nearest cells in the latent (itself included).

    The median, not the mean: a cell at the edge of an unseen type's cluster has a few known
    cells among its neighbours, which would drag a mean below the threshold.

    Beyond ``MAX_NEIGHBOURHOOD_CELLS`` cells the neighbours are looked up among a seeded sample
    of them, so the cost stays linear in the cells.
    """
    from sklearn.neighbors import NearestNeighbors

    n_cells = len(latent)
    if n_cells == 0:
        return np.zeros(0, np.float32)
    pool = np.arange(n_cells)
    if n_cells > MAX_NEIGHBOURHOOD_CELLS:
        pool = np.sort(np.random.default_rng(seed).choice(n_cells, MAX_NEIGHBOURHOOD_CELLS, replace=False))
    index = NearestNeighbors(n_neighbors=min(k, pool.size)).fit(latent[pool])
    neighbours = index.kneighbors(latent, return_distance=False)
    return np.median(np.asarray(values, np.float32)[pool][neighbours], axis=1).astype(np.float32)


def shifted_batches(novelty: np.ndarray, batch_codes: np.ndarray, threshold: float) -> np.ndarray:
    """The batch codes whose median novelty is above ``threshold``: such a batch looks novel as a
    whole, which says its batch effect is not removed, not that all its cells are unseen types."""
    shifted = [code for code in np.unique(batch_codes) if np.median(novelty[batch_codes == code]) > threshold]
    return np.asarray(shifted, dtype=batch_codes.dtype)


# Reconstruction novelty: the genes whose standardised residuals a cell's score averages, and the
# floor (log-normalised units) added to every gene's residual scale.
RECONSTRUCTION_TOP_GENES = 50
GENE_SCALE_FLOOR = 1e-2


@dataclass
class ReconstructionNovelty:
    """Novelty from how badly the decoder reconstructs a cell from its own latent.

    The decoder, trained to reconstruct another cell of the same type (the permutation), gives
    back the expression typical of the type a latent sits in. A cell of a type the reference
    never saw, encoded beside a known type (where the latent novelty cannot tell it apart), is
    reconstructed as that type: its own markers come back missing. The cell's *score* is the
    mean of its ``top`` largest squared residuals ``((reconstruction - x) / gene_scale)^2``
    (``gene_scale``: each gene's root mean squared residual over labelled training cells, plus
    :data:`GENE_SCALE_FLOOR`): a few markers off by many of their usual errors stand out, where
    a mean over all genes drowns them. The *novelty* is the share of held-out reference cells
    (the calibration batch, else the validation cells, as for :class:`NoveltyModel`) whose score
    is lower. Scores are computed chunk by chunk inside :func:`scpermut.model.minibatches.infer`.
    """

    gene_scale: np.ndarray
    top: int
    reference_scores: np.ndarray

    @staticmethod
    def gene_scale_from(sum_of_squares: np.ndarray, n_cells: int) -> np.ndarray:
        return (np.sqrt(np.asarray(sum_of_squares, np.float64) / max(n_cells, 1)) + GENE_SCALE_FLOOR).astype(np.float32)

    def score(self, x: np.ndarray, reconstruction: np.ndarray) -> np.ndarray:
        """Each row's mean of its ``top`` largest squared standardised residuals."""
        squared = np.square((reconstruction - x) / self.gene_scale)
        top = min(int(self.top), squared.shape[1])
        largest = np.sort(np.partition(squared, squared.shape[1] - top, axis=1)[:, -top:], axis=1)
        return largest.mean(axis=1, dtype=np.float64).astype(np.float32)

    def calibrated(self, held_out_scores: np.ndarray) -> ReconstructionNovelty:
        return ReconstructionNovelty(self.gene_scale, self.top, np.quantile(held_out_scores, np.linspace(0, 1, REFERENCE_QUANTILES)))

    def novelty(self, scores: np.ndarray) -> np.ndarray:
        """Share of the held-out reference cells whose score is below each cell's (0 to 1)."""
        ranks = np.searchsorted(self.reference_scores, np.asarray(scores, np.float64), side="left")
        return (ranks / self.reference_scores.size).astype(np.float32)

    def batch_novelty(self, scores: np.ndarray, batch_codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`novelty` per batch; a batch whose median score is above the held-out reference
        cells' ``BATCH_SHIFT_QUANTILE`` quantile (its typical cell reconstructs worse than most
        reference cells: another technology, a condition the reference lacks, not a new type) has
        its scores scaled so that its median falls on that quantile first: its cells are judged
        against their own batch, and a new type stands out as cells reconstructing worse than the
        rest of it. A batch within the reference's spread is left as is (an unseen type inflates
        its median; rescaling it would hide that type). Returns the novelty and the codes of the
        batches so rescaled."""
        scores = np.asarray(scores, np.float64)
        novelty = self.novelty(scores)
        rescaled = []
        allowed = float(np.quantile(self.reference_scores, BATCH_SHIFT_QUANTILE))
        for code in np.unique(batch_codes):
            members = batch_codes == code
            median = float(np.median(scores[members]))
            if median > allowed:
                novelty[members] = self.novelty(scores[members] * (allowed / median))
                rescaled.append(code)
        return novelty, np.asarray(rescaled, dtype=batch_codes.dtype)

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"gene_scale": self.gene_scale, "top": np.asarray(self.top), "reference_scores": self.reference_scores}

    @classmethod
    def from_arrays(cls, arrays) -> ReconstructionNovelty:
        return cls(np.asarray(arrays["gene_scale"], np.float32), int(np.asarray(arrays["top"])), np.asarray(arrays["reference_scores"]))
