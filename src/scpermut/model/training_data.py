"""What the model trains on, read from a prepared AnnData: expression, labels, batches, splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scpermut import constants
from scpermut._plain import plain
from scpermut.data.io import open_training_cells
from scpermut.data.stored import StoredRows
from scpermut.errors import InputError
from scpermut.keys import Keys

NOT_LABELLED = -1
# A pseudo-label code: the cell looks novel, so it is neither pseudo-labelled nor aligned.
NOVEL = -2


def _model_columns(matrix, genes_mask: np.ndarray) -> sp.csr_matrix:
    """The model genes' columns as float32 CSR; the matrix itself (no copy) when it holds only them."""
    if not genes_mask.all():
        matrix = matrix[:, genes_mask]
    return sp.csr_matrix(matrix, dtype=np.float32)


def _checked_genes(obs, var, uns, source: str) -> np.ndarray:
    """The model genes' mask (``var["highly_variable"]``), after checking that ``prepare`` wrote
    every field training reads.

    Raises
    ------
    InputError
        Naming the first missing field.
    """
    if constants.PREPARE_UNS not in uns:
        raise InputError(
            f"{source}: uns['{constants.PREPARE_UNS}'] is missing; run `scpermut prepare` on the QC'd samples first."
        )
    keys = Keys.from_record({key: plain(value) for key, value in dict(uns[constants.PREPARE_UNS]).items()})
    for column in (keys.class_key, keys.batch_key, constants.SPLIT):
        if column not in obs:
            raise InputError(f"{source}: obs column '{column}' is missing; run `scpermut prepare` first.")
    if "highly_variable" not in var or not var["highly_variable"].any():
        raise InputError(
            f"{source}: var['highly_variable'] is missing or selects no gene; run `scpermut prepare` first."
        )
    return var["highly_variable"].to_numpy(bool)


def _no_counts(source: str) -> str:
    return f"{source}: layers['{constants.COUNTS_LAYER}'] (raw counts) is missing; the negative-binomial loss needs it."


@dataclass
class TrainingData:
    """The arrays one training run needs, taken from a ``prepared.h5ad``.

    Attributes
    ----------
    expression
        Log-normalised expression of the model genes (CSR, float32, cells x genes), or
        :class:`~scpermut.data.stored.StoredRows` reading them from the file (:meth:`from_file`).
    counts
        Raw counts of the model genes (the same kind) when the negative-binomial loss needs them, else None.
    genes, classes, batches
        Names of the model genes, the cell types and the batches.
    train_codes
        Class index of labelled ``train`` cells, ``-1`` for every other cell.
    validation_codes
        Class index of ``validation`` cells, ``-1`` for every other cell.
    batch_codes
        Batch index of every cell.
    condition_codes
        Index of every cell's biological condition (``condition_key``; all 0 without one): the
        alignment compares batches only within a condition.
    calibration_codes
        Class index of ``calibration`` cells (a labelled batch held out of training, whose labels
        fit the temperature and the novelty scale), ``-1`` for every other cell.
    preprocess
        The normalisation and key settings ``prepare`` used (``uns["scpermut_prepare"]``).
    """

    expression: sp.csr_matrix | StoredRows
    counts: sp.csr_matrix | StoredRows | None
    genes: list[str]
    classes: list[str]
    batches: list[str]
    train_codes: np.ndarray
    validation_codes: np.ndarray
    batch_codes: np.ndarray
    preprocess: dict
    condition_codes: np.ndarray | None = None
    calibration_codes: np.ndarray | None = None

    def __post_init__(self):
        unset = np.full(self.n_cells, NOT_LABELLED, dtype=np.int64)
        if self.condition_codes is None:
            self.condition_codes = np.zeros(self.n_cells, dtype=np.int64)
        if self.calibration_codes is None:
            self.calibration_codes = unset

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
        genes_mask = _checked_genes(adata.obs, adata.var, adata.uns, source)
        counts = None
        if with_counts:
            if constants.COUNTS_LAYER not in adata.layers:
                raise InputError(_no_counts(source))
            counts = _model_columns(adata.layers[constants.COUNTS_LAYER], genes_mask)
        return cls._from_tables(adata.obs, adata.var, adata.uns, genes_mask, _model_columns(adata.X, genes_mask), counts)

    @classmethod
    def from_file(cls, path, with_counts: bool = False) -> TrainingData:
        """The training cells of a ``prepared.h5ad`` with the matrices left on disk: ``expression``
        (and ``counts``) are :class:`~scpermut.data.stored.StoredRows`, read as training asks."""
        obs, var, uns, expression, counts = open_training_cells(path, with_counts)
        genes_mask = _checked_genes(obs, var, uns, str(path))
        if with_counts and counts is None:
            raise InputError(_no_counts(str(path)))
        return cls._from_tables(obs, var, uns, genes_mask, expression, counts)

    @classmethod
    def _from_tables(cls, obs, var, uns, genes_mask, expression, counts) -> TrainingData:
        preprocess = {key: plain(value) for key, value in dict(uns[constants.PREPARE_UNS]).items()}
        keys = Keys.from_record(preprocess)
        split = obs[constants.SPLIT].astype(str).to_numpy()
        labels = obs[keys.class_key].astype(str).to_numpy()
        labelled = np.isin(split, constants.LABELLED_SPLITS)
        classes = sorted(set(labels[labelled]) - {keys.unlabeled_category})
        class_index = {name: code for code, name in enumerate(classes)}
        codes = np.array([class_index.get(label, NOT_LABELLED) for label in labels], dtype=np.int64)
        train_codes = np.where(split == constants.SPLIT_TRAIN, codes, NOT_LABELLED)
        validation_codes = np.where(split == constants.SPLIT_VALIDATION, codes, NOT_LABELLED)
        calibration_codes = np.where(split == constants.SPLIT_CALIBRATION, codes, NOT_LABELLED)
        condition_codes = None
        if keys.condition_key is not None and keys.condition_key in obs:
            conditions = obs[keys.condition_key].astype(str).to_numpy()
            condition_codes = np.unique(conditions, return_inverse=True)[1].astype(np.int64)
        batch_values = obs[keys.batch_key].astype(str).to_numpy()
        batches = sorted(set(batch_values))
        batch_codes = np.searchsorted(batches, batch_values).astype(np.int64)
        return cls(
            expression=expression,
            counts=counts,
            genes=var.index[genes_mask].astype(str).tolist(),
            classes=classes,
            batches=batches,
            train_codes=train_codes,
            validation_codes=validation_codes,
            batch_codes=batch_codes,
            preprocess=preprocess,
            condition_codes=condition_codes,
            calibration_codes=calibration_codes,
        )

    @property
    def stored(self) -> bool:
        """The matrices are read from the file as needed (:meth:`from_file`)."""
        return isinstance(self.expression, StoredRows)

    def fingerprint(self) -> str:
        """SHA-256 of everything training reads: expression, genes, labels, batches.

        Read from the file, the expression's digest is :attr:`StoredRows.digest` (one pass over
        the file, once): the same data held in memory gives another fingerprint."""
        digest = hashlib.sha256()
        if self.stored:
            digest.update(self.expression.digest.encode())
        else:
            for array in (self.expression.data, self.expression.indices, self.expression.indptr):
                digest.update(memoryview(np.ascontiguousarray(array)))  # no copy of a large matrix
        for array in (
            self.train_codes,
            self.validation_codes,
            self.batch_codes,
            self.condition_codes,
            self.calibration_codes,
        ):
            digest.update(memoryview(np.ascontiguousarray(array)))
        for names in (self.genes, self.classes, self.batches):
            digest.update("\n".join(names).encode())
        return digest.hexdigest()
