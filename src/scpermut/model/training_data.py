"""What the model trains on, read from a prepared AnnData: expression, labels, batches, splits."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from scpermut import constants
from scpermut._plain import plain
from scpermut.errors import InputError
from scpermut.keys import Keys

NOT_LABELLED = -1


def _model_columns(matrix, genes_mask: np.ndarray) -> sp.csr_matrix:
    """The model genes' columns as float32 CSR; the matrix itself (no copy) when it holds only them."""
    if not genes_mask.all():
        matrix = matrix[:, genes_mask]
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
        if constants.PREPARE_UNS not in adata.uns:
            raise InputError(
                f"{source}: uns['{constants.PREPARE_UNS}'] is missing; run `scpermut prepare` on the QC'd samples first."
            )
        preprocess = {
            key: plain(value) for key, value in dict(adata.uns[constants.PREPARE_UNS]).items()
        }
        keys = Keys.from_record(preprocess)
        class_key, batch_key = keys.class_key, keys.batch_key
        for column in (class_key, batch_key, constants.SPLIT):
            if column not in adata.obs:
                raise InputError(
                    f"{source}: obs column '{column}' is missing; run `scpermut prepare` first."
                )
        if "highly_variable" not in adata.var or not adata.var["highly_variable"].any():
            raise InputError(
                f"{source}: var['highly_variable'] is missing or selects no gene; run `scpermut prepare` first."
            )
        genes_mask = adata.var["highly_variable"].to_numpy(bool)
        split = adata.obs[constants.SPLIT].astype(str).to_numpy()
        labels = adata.obs[class_key].astype(str).to_numpy()
        labelled = np.isin(split, [constants.SPLIT_TRAIN, constants.SPLIT_VALIDATION])
        classes = sorted(set(labels[labelled]) - {keys.unlabeled_category})
        class_index = {name: code for code, name in enumerate(classes)}
        codes = np.array([class_index.get(label, NOT_LABELLED) for label in labels], dtype=np.int64)
        train_codes = np.where(split == constants.SPLIT_TRAIN, codes, NOT_LABELLED)
        validation_codes = np.where(split == constants.SPLIT_VALIDATION, codes, NOT_LABELLED)
        batch_values = adata.obs[batch_key].astype(str).to_numpy()
        batches = sorted(set(batch_values))
        batch_codes = np.searchsorted(batches, batch_values).astype(np.int64)
        counts = None
        if with_counts:
            if constants.COUNTS_LAYER not in adata.layers:
                raise InputError(
                    f"{source}: layers['{constants.COUNTS_LAYER}'] (raw counts) is missing; the negative-binomial loss needs it."
                )
            counts = _model_columns(adata.layers[constants.COUNTS_LAYER], genes_mask)
        return cls(
            expression=_model_columns(adata.X, genes_mask),
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
