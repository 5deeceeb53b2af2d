"""What the model trains on, read from a prepared AnnData, and mini-batches densified one at a time."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import keras
import numpy as np
import scipy.sparse as sp

from scpermut import _keys
from scpermut._plain import plain
from scpermut.errors import InputError
from scpermut.model.permutation import epoch_rng, permutation_targets, pseudo_label_targets

NOT_LABELLED = -1


def _csr(matrix) -> sp.csr_matrix:
    return sp.csr_matrix(matrix, dtype=np.float32)


@dataclass
class TrainingData:
    """The arrays one training run needs, taken from a ``prepared.h5ad``.

    Attributes
    ----------
    expression
        Log-normalised expression of the model genes (CSR, float32, cells x genes).
    counts
        Raw counts of the model genes (CSR) when the negative-binomial loss needs them, else None.
    genes, classes, batches
        Names of the model genes, the cell types and the batches.
    train_codes
        Class index of labelled ``train`` cells, ``-1`` for every other cell.
    validation_codes
        Class index of ``validation`` cells, ``-1`` for every other cell.
    batch_codes
        Batch index of every cell.
    preprocess
        The normalisation and key settings ``prepare`` used (``uns["scpermut_prepare"]``).
    """

    expression: sp.csr_matrix
    counts: sp.csr_matrix | None
    genes: list[str]
    classes: list[str]
    batches: list[str]
    train_codes: np.ndarray
    validation_codes: np.ndarray
    batch_codes: np.ndarray
    preprocess: dict

    @property
    def n_cells(self) -> int:
        return self.expression.shape[0]

    @classmethod
    def from_anndata(
        cls, adata, source: str = "AnnData", with_counts: bool = False
    ) -> TrainingData:
        """Read the model's inputs from an AnnData written by ``scpermut prepare``.

        Raises
        ------
        InputError
            When a field ``prepare`` writes is missing.
        """
        if _keys.PREPARE_UNS not in adata.uns:
            raise InputError(
                f"{source}: uns['{_keys.PREPARE_UNS}'] is missing; run `scpermut prepare` on the QC'd samples first."
            )
        preprocess = {
            key: plain(value) for key, value in dict(adata.uns[_keys.PREPARE_UNS]).items()
        }
        class_key, batch_key = preprocess["class_key"], preprocess["batch_key"]
        for column in (class_key, batch_key, _keys.SPLIT):
            if column not in adata.obs:
                raise InputError(
                    f"{source}: obs column '{column}' is missing; run `scpermut prepare` first."
                )
        if "highly_variable" not in adata.var or not adata.var["highly_variable"].any():
            raise InputError(
                f"{source}: var['highly_variable'] is missing or selects no gene; run `scpermut prepare` first."
            )
        genes_mask = adata.var["highly_variable"].to_numpy(bool)
        split = adata.obs[_keys.SPLIT].astype(str).to_numpy()
        labels = adata.obs[class_key].astype(str).to_numpy()
        labelled = np.isin(split, [_keys.SPLIT_TRAIN, _keys.SPLIT_VALIDATION])
        classes = sorted(set(labels[labelled]) - {str(preprocess["unlabeled_category"])})
        class_index = {name: code for code, name in enumerate(classes)}
        codes = np.array([class_index.get(label, NOT_LABELLED) for label in labels], dtype=np.int64)
        train_codes = np.where(split == _keys.SPLIT_TRAIN, codes, NOT_LABELLED)
        validation_codes = np.where(split == _keys.SPLIT_VALIDATION, codes, NOT_LABELLED)
        batch_values = adata.obs[batch_key].astype(str).to_numpy()
        batches = sorted(set(batch_values))
        batch_codes = np.searchsorted(batches, batch_values).astype(np.int64)
        counts = None
        if with_counts:
            if _keys.COUNTS_LAYER not in adata.layers:
                raise InputError(
                    f"{source}: layers['{_keys.COUNTS_LAYER}'] (raw counts) is missing; the negative-binomial loss needs it."
                )
            counts = _csr(adata.layers[_keys.COUNTS_LAYER][:, genes_mask])
        return cls(
            expression=_csr(adata.X[:, genes_mask]),
            counts=counts,
            genes=adata.var_names[genes_mask].astype(str).tolist(),
            classes=classes,
            batches=batches,
            train_codes=train_codes,
            validation_codes=validation_codes,
            batch_codes=batch_codes,
            preprocess=preprocess,
        )

    def fingerprint(self) -> str:
        """SHA-256 of everything training reads: expression, genes, labels, batches."""
        digest = hashlib.sha256()
        for array in (
            self.expression.data,
            self.expression.indices,
            self.expression.indptr,
            self.train_codes,
            self.validation_codes,
            self.batch_codes,
        ):
            digest.update(np.ascontiguousarray(array).tobytes())
        for names in (self.genes, self.classes, self.batches):
            digest.update("\n".join(names).encode())
        return digest.hexdigest()


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

    ``pseudo_labels`` (with ``permute``): called at each epoch's draw, returns the predicted class
    of the unlabelled and query cells the classifier is sure of (``-1`` elsewhere); those cells
    then reconstruct a labelled cell of that type (:func:`pseudo_label_targets`).
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
        if self.permute:
            self.targets = permutation_targets(
                self.data.train_codes, self.data.batch_codes, rng, self.across_batches
            )
            if self.pseudo_labels is not None:
                self.targets = pseudo_label_targets(
                    self.targets,
                    self.pseudo_labels(),
                    self.data.train_codes,
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
