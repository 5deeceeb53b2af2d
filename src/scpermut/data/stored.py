"""Rows of a CSR matrix stored in an h5ad, read from disk when asked for: what training holds
instead of the matrix when the atlas does not fit in memory (``--data_access disk``)."""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from scpermut.errors import InputError

log = logging.getLogger(__name__)

# Rows read with one contiguous read at most; a few million stored values.
ROWS_PER_READ = 8192
# A group of wanted rows this much sparser than the rows it spans is read row by row.
SPARSE_SPAN = 64


class StoredRows:
    """The kept rows x kept columns of a CSR matrix in an h5ad file, read when indexed.

    ``rows[index]`` (an array of row numbers among the kept rows, or a slice) returns those rows
    as float32 CSR in the order asked, duplicates allowed. The wanted rows are read in file
    order, one contiguous read per stretch of at most ``ROWS_PER_READ`` file rows (row by row
    where they are few in their stretch), so reading many nearby rows costs one pass over them.
    Only the row pointers (8 bytes per row) stay in memory.
    """

    def __init__(self, path: str | Path, element: str, rows: np.ndarray, columns: np.ndarray):
        import h5py

        self.path = Path(path)
        self.element = element
        self._file = h5py.File(self.path, "r")
        stored = self._file[element]
        if dict(stored.attrs).get("encoding-type") != "csr_matrix":
            raise InputError(f"{self.path}: '{element}' is not stored as CSR; reading from disk needs the CSR matrix `scpermut prepare` writes.")
        self._data, self._indices = stored["data"], stored["indices"]
        self._indptr = stored["indptr"][:].astype(np.int64)
        self._n_columns = int(stored.attrs["shape"][1])
        self.positions = np.flatnonzero(rows)
        self.columns = None if columns.all() else np.flatnonzero(columns)
        self.shape = (int(self.positions.size), int(columns.sum()))
        self._lock = threading.Lock()  # h5py reads are not to be interleaved from two threads

    def __getitem__(self, key) -> sp.csr_matrix:
        rows = np.arange(*key.indices(self.shape[0])) if isinstance(key, slice) else np.asarray(key, dtype=np.int64)
        if rows.size == 0:
            return sp.csr_matrix((0, self.shape[1]), dtype=np.float32)
        positions = self.positions[rows]
        order = np.argsort(positions, kind="stable")
        wanted = positions[order]
        pieces = []
        with self._lock:
            start = 0
            while start < wanted.size:
                stop = int(np.searchsorted(wanted, wanted[start] + ROWS_PER_READ, side="left"))
                group = wanted[start:stop]
                span = int(group[-1] - group[0] + 1)
                if group.size * SPARSE_SPAN < span:
                    pieces.extend(self._read(row, row + 1)[[0] * count] for row, count in zip(*np.unique(group, return_counts=True)))
                else:
                    pieces.append(self._read(int(group[0]), int(group[-1]) + 1)[group - group[0]])
                start = stop
        stacked = sp.vstack(pieces, format="csr") if len(pieces) > 1 else pieces[0]
        return stacked[np.argsort(order, kind="stable")]

    def _read(self, first: int, stop: int) -> sp.csr_matrix:
        """File rows ``first:stop``, on the kept columns."""
        low, high = self._indptr[first], self._indptr[stop]
        block = sp.csr_matrix(
            (self._data[low:high].astype(np.float32, copy=False), self._indices[low:high], self._indptr[first : stop + 1] - low),
            shape=(stop - first, self._n_columns),
        )
        return block if self.columns is None else block[:, self.columns]

    def blocks(self) -> Iterator[sp.csr_matrix]:
        """The kept rows in file order, ``ROWS_PER_READ`` kept rows at a time."""
        for start in range(0, self.shape[0], ROWS_PER_READ):
            yield self[start : start + ROWS_PER_READ]

    @functools.cached_property
    def digest(self) -> str:
        """SHA-256 of the kept rows' values, column indices and row pointers, block by block."""
        log.info("%s: hashing the %d training cells' %s (one pass over the file)", self.path, self.shape[0], self.element)
        digest = hashlib.sha256()
        for block in self.blocks():
            for array in (block.data, block.indices, block.indptr):
                digest.update(memoryview(np.ascontiguousarray(array)))
        return digest.hexdigest()

    def row_sums(self) -> np.ndarray:
        """Each kept row's sum over the kept columns, ``(rows, 1)`` float32, one pass over the file."""
        if self.shape[0] == 0:
            return np.zeros((0, 1), np.float32)
        return np.concatenate([np.asarray(block.sum(axis=1), np.float32) for block in self.blocks()])
