"""Training mini-batches from a matrix read from the file (``--data_access disk``): block-shuffled
reads through a shuffle buffer, so an atlas larger than memory trains with a few buffers held."""

from __future__ import annotations

import threading

import numpy as np

from scpermut.model.minibatches import PASS_STREAM, CellBatches
from scpermut.model.permutation import epoch_rng, permutation_targets, pseudo_label_targets

# Consecutive cells of the file that stay together in a pass: one read each.
BLOCK_CELLS = 1024
# Cells read into memory at a time, shuffled there, partners drawn among them.
BUFFER_CELLS = 65_536


class StoredCellBatches(CellBatches):
    """:class:`CellBatches` over :class:`~scpermut.data.stored.StoredRows`.

    A pass over the cells takes them in blocks of ``block_cells`` consecutive cells of the file,
    the blocks in an order shuffled by ``(seed, phase, pass, PASS_STREAM)``. An epoch's window of
    that stream is cut into shuffle buffers of ``buffer_cells`` cells: each buffer is read from
    the file once, its cells shuffled, and the permutation partners of its cells (and of its
    pseudo-labelled cells) drawn among its own cells, so a cell and the cell it reconstructs are
    always in memory together. A mini-batch thus mixes cells from about ``buffer_cells /
    block_cells`` places of the file. Like :class:`CellBatches`, every draw depends on
    ``(seed, phase, epoch)`` only. There are no labelled slots (``labelled_share``).
    """

    def __init__(self, data, *, block_cells: int = BLOCK_CELLS, buffer_cells: int = BUFFER_CELLS, **options):
        self.block_cells, self.buffer_cells = block_cells, buffer_cells
        self._buffers: dict[int, dict] = {}
        self._lock = threading.Lock()
        super().__init__(data, **options)

    def _pass(self, number: int) -> np.ndarray:
        blocks = np.array_split(self.cells, max(1, -(-self.cells.size // self.block_cells)))
        order = epoch_rng(self.seed, self.phase, number, PASS_STREAM).permutation(len(blocks))
        return np.concatenate([blocks[index] for index in order])

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's cells, their order within each buffer and their partners."""
        rng = epoch_rng(self.seed, self.phase, epoch)
        window = self._window(epoch)
        pseudo = self.pseudo_labels(np.unique(window)) if self.pseudo_labels is not None else None
        codes, batch_codes = self.data.train_codes, self.data.batch_codes
        self.aligned_types = codes if pseudo is None else np.where(codes >= 0, codes, pseudo)
        self.order = np.empty_like(window)
        self.target_positions = np.arange(window.size)
        partner_rng = epoch_rng(self.seed, self.phase, epoch, 2)
        for start in range(0, window.size, self.buffer_cells):
            cells = window[start : start + self.buffer_cells]
            cells = cells[rng.permutation(cells.size)]
            self.order[start : start + cells.size] = cells
            if self.permute:
                local = permutation_targets(codes[cells], batch_codes[cells], rng, self.across_batches)
                if pseudo is not None and self.pseudo_permute:
                    local = pseudo_label_targets(local, pseudo[cells], codes[cells], batch_codes[cells], partner_rng)
                self.target_positions[start : start + cells.size] = start + local
        with self._lock:
            self._buffers.clear()

    def __getitem__(self, index: int) -> dict:
        positions = np.arange(index * self.batch_size, min((index + 1) * self.batch_size, self.order.size))
        target_positions = self.target_positions[positions]
        rows, targets = self.order[positions], self.order[target_positions]
        target_name = "counts" if self.reconstruct_counts else "expression"
        return self._batch(rows, targets, self._dense("expression", positions), self._dense(target_name, target_positions))

    def _dense(self, name: str, positions: np.ndarray) -> np.ndarray:
        """Rows at ``positions`` of the epoch order, from their buffers. A cell's partner is in its
        cell's buffer, so positions grouped by buffer keep their order."""
        buffers = positions // self.buffer_cells
        pieces = [
            self._buffer(int(buffer))[name][positions[buffers == buffer] - buffer * self.buffer_cells].toarray()
            for buffer in np.unique(buffers)
        ]
        return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)

    def _buffer(self, number: int) -> dict:
        """Buffer ``number``'s cells read from the file (in epoch order); the buffers more than one
        away are dropped, so at most three are held."""
        with self._lock:
            if number not in self._buffers:
                for old in [key for key in self._buffers if abs(key - number) > 1]:
                    del self._buffers[old]
                cells = self.order[number * self.buffer_cells : (number + 1) * self.buffer_cells]
                self._buffers[number] = {"expression": self.data.expression[cells]}
                if self.reconstruct_counts:
                    self._buffers[number]["counts"] = self.data.counts[cells]
            return self._buffers[number]
