"""Mini-batches of cells, densified from the sparse matrix one at a time: for training (with
permutation targets) and for inference."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import scipy.sparse as sp

from scpermut.model.permutation import epoch_rng, permutation_targets, pseudo_label_targets
from scpermut.model.training_data import TrainingData


def _one_hot(codes: np.ndarray, width: int) -> np.ndarray:
    """One-hot rows; a negative code gives a row of zeros."""
    matrix = np.zeros((codes.size, width), dtype=np.float32)
    known = codes >= 0
    matrix[np.flatnonzero(known), codes[known]] = 1.0
    return matrix


class CellBatches(keras.utils.PyDataset):
    """Training mini-batches, densified from the sparse matrix one batch at a time.

    Order and permutation targets are redrawn by :meth:`set_epoch` from ``(seed, phase, epoch)``
    only, so any epoch can be replayed exactly (this is what makes ``--resume`` exact).

    Each batch is a dict: ``x`` (expression), ``target`` (expression, or raw counts for the
    negative-binomial loss, of the cell to reconstruct), ``library_size`` (with counts only),
    ``classes`` (one-hot, zeros when the cell is not a labelled training cell),
    ``batches`` (one-hot) and ``target_batches`` (one-hot batch of the cell to reconstruct,
    what a conditional decoder is told).

    ``aligned_types``, ``batch_codes`` and ``condition_codes`` (integer codes) are what the
    alignment groups the cells by: the label of labelled training cells, else the epoch's
    pseudo-label, else ``-1``.

    ``pseudo_labels``: called at each epoch's draw, returns the predicted class of the unlabelled
    and query cells the classifier is sure of and that do not look novel (``-1`` elsewhere); they
    join the alignment under it and, with ``pseudo_permute``, reconstruct a labelled cell of that
    type (:func:`pseudo_label_targets`).
    """

    def __init__(
        self,
        data: TrainingData,
        *,
        batch_size: int,
        seed: int,
        phase: int,
        cells: np.ndarray | None = None,
        permute: bool = False,
        across_batches: bool = True,
        labelled_share: float = 0.0,
        pseudo_labels: Callable[[], np.ndarray] | None = None,
        pseudo_permute: bool = False,
    ):
        super().__init__(workers=1, use_multiprocessing=False)
        self.data = data
        self.batch_size = batch_size
        self.seed = seed
        self.phase = phase
        self.cells = np.arange(data.n_cells) if cells is None else np.asarray(cells)
        self.permute = permute
        self.across_batches = across_batches
        self.pseudo_labels = pseudo_labels
        self.pseudo_permute = pseudo_permute
        labelled = data.train_codes[self.cells] >= 0
        # Labelled slots per mini-batch: only when there are labelled and other cells to mix.
        self.labelled_slots = 0
        if 0 < labelled_share and labelled.any() and not labelled.all():
            self.labelled_slots = min(int(np.ceil(labelled_share * batch_size)), batch_size - 1)
        self.reconstruct_counts = data.counts is not None
        if self.reconstruct_counts:
            self.library_size = np.asarray(data.counts.sum(axis=1), dtype=np.float32)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's cell order and permutation targets."""
        rng = epoch_rng(self.seed, self.phase, epoch)
        self.order = rng.permutation(self.cells)
        if self.labelled_slots:
            self.order = self._with_labelled_share(epoch_rng(self.seed, self.phase, epoch, 1))
        pseudo = self.pseudo_labels() if self.pseudo_labels is not None else None
        codes = self.data.train_codes
        self.aligned_types = codes if pseudo is None else np.where(codes >= 0, codes, pseudo)
        if self.permute:
            self.targets = permutation_targets(codes, self.data.batch_codes, rng, self.across_batches)
            if pseudo is not None and self.pseudo_permute:
                self.targets = pseudo_label_targets(
                    self.targets,
                    pseudo,
                    codes,
                    self.data.batch_codes,
                    epoch_rng(self.seed, self.phase, epoch, 2),
                )
        else:
            self.targets = np.arange(self.data.n_cells)

    def _with_labelled_share(self, rng: np.random.Generator) -> np.ndarray:
        """Every cell once, in mini-batches whose first ``labelled_slots`` places hold labelled
        cells drawn class-balanced (each type in turn, members reshuffled as they run out)."""
        regular = self.batch_size - self.labelled_slots
        n_batches = int(np.ceil(self.cells.size / regular))
        codes = self.data.train_codes[self.cells]
        types = np.unique(codes[codes >= 0])
        n_draws = n_batches * self.labelled_slots
        per_type = int(np.ceil(n_draws / types.size))
        draws = []
        for code in types:
            members = self.cells[codes == code]
            rounds = int(np.ceil(per_type / members.size))
            draws.append(np.concatenate([rng.permutation(members) for _ in range(rounds)])[:per_type])
        # Interleave the types so every mini-batch gets its share of each.
        labelled = np.stack(draws, axis=1).ravel()[:n_draws]
        labelled = labelled.reshape(n_batches, self.labelled_slots)
        batches = [
            np.concatenate([labelled[index], self.order[index * regular : (index + 1) * regular]])
            for index in range(n_batches)
        ]
        return np.concatenate(batches)

    def __len__(self) -> int:
        if self.labelled_slots:
            return int(np.ceil(self.cells.size / (self.batch_size - self.labelled_slots)))
        return int(np.ceil(self.cells.size / self.batch_size))

    def __getitem__(self, index: int) -> dict:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        targets = self.targets[rows]
        batch = {
            "x": self.data.expression[rows].toarray(),
            "classes": _one_hot(self.data.train_codes[rows], len(self.data.classes)),
            "batches": _one_hot(self.data.batch_codes[rows], len(self.data.batches)),
            "target_batches": _one_hot(self.data.batch_codes[targets], len(self.data.batches)),
            "aligned_types": self.aligned_types[rows].astype(np.int32),
            "batch_codes": self.data.batch_codes[rows].astype(np.int32),
            "condition_codes": self.data.condition_codes[rows].astype(np.int32),
        }
        if self.reconstruct_counts:
            batch["target"] = self.data.counts[targets].toarray()
            batch["library_size"] = self.library_size[targets]
        else:
            batch["target"] = self.data.expression[targets].toarray()
        return batch


class InferenceBatches(keras.utils.PyDataset):
    """Expression rows in order, densified one batch at a time, for prediction."""

    def __init__(self, expression: sp.csr_matrix, batch_size: int):
        super().__init__(workers=1, use_multiprocessing=False)
        self.expression = expression
        self.batch_size = batch_size

    def __len__(self) -> int:
        return int(np.ceil(self.expression.shape[0] / self.batch_size))

    def __getitem__(self, index: int):
        rows = slice(index * self.batch_size, (index + 1) * self.batch_size)
        return (self.expression[rows].toarray(),)


def infer(network, expression, batch_size: int) -> dict[str, np.ndarray]:
    """Every output of ``network`` for the rows of a sparse matrix, densified one batch at a time.

    The one inference path: :meth:`scpermut.Model.transform` and the validation scores of
    training both go through it.
    """
    batches = InferenceBatches(sp.csr_matrix(expression, dtype=np.float32), batch_size)
    outputs = network.predict(batches, verbose=0)
    return {name: np.asarray(value, dtype=np.float32) for name, value in outputs.items()}
