"""Mini-batches of cells, densified from the sparse matrix one at a time: for training (with
permutation targets) and for inference (encoder and classifier only)."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import scipy.sparse as sp
import tensorflow as tf

from scpermut.data.stored import StoredRows
from scpermut.model.permutation import epoch_rng, permutation_targets, pseudo_label_targets
from scpermut.model.training_data import TrainingData

# The random stream of the passes over the cells when an epoch holds only some of them.
PASS_STREAM = 3


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

    ``aligned_types``, ``batch_codes``, ``condition_codes`` (integer codes) and ``conditions``
    (one-hot) are what the alignment groups the cells by: the label of labelled training cells,
    else the epoch's pseudo-label, else ``-1`` (``NOVEL``: kept out of the alignment).

    ``pseudo_labels``: called at each epoch's draw with the epoch's cells, returns the predicted
    class of those unlabelled and query cells the classifier is sure of and that do not look
    novel (``-1`` elsewhere); they join the alignment under it and, with ``pseudo_permute``,
    reconstruct a labelled cell of that type (:func:`pseudo_label_targets`).

    ``epoch_cells`` (0: all): with fewer than the phase's cells, an epoch is the next window of
    that many cells in a stream of shuffled passes over the cells (each cell once per pass).
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
        pseudo_labels: Callable[[np.ndarray], np.ndarray] | None = None,
        pseudo_permute: bool = True,
        epoch_cells: int = 0,
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
        self.n_conditions = int(data.condition_codes.max()) + 1 if data.n_cells else 1
        self.epoch_size = min(epoch_cells, self.cells.size) if epoch_cells else self.cells.size
        labelled = data.train_codes[self.cells] >= 0
        # Labelled slots per mini-batch: only when there are labelled and other cells to mix.
        self.labelled_slots = 0
        if 0 < labelled_share and labelled.any() and not labelled.all():
            self.labelled_slots = min(int(np.ceil(labelled_share * batch_size)), batch_size - 1)
        self.reconstruct_counts = data.counts is not None
        if self.reconstruct_counts:
            self.library_size = data.counts.row_sums() if data.stored else np.asarray(data.counts.sum(axis=1), np.float32)
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw this epoch's cell order and permutation targets."""
        rng = epoch_rng(self.seed, self.phase, epoch)
        if self.epoch_size == self.cells.size:
            self.order = rng.permutation(self.cells)
        else:
            self.order = self._window(epoch)
        if self.labelled_slots:
            self.order = self._with_labelled_share(epoch_rng(self.seed, self.phase, epoch, 1))
        pseudo = self.pseudo_labels(np.unique(self.order)) if self.pseudo_labels is not None else None
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

    def _window(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s ``epoch_size`` cells: its window of the stream of passes (:meth:`_pass`)."""
        start = epoch * self.epoch_size
        first, last = start // self.cells.size, (start + self.epoch_size - 1) // self.cells.size
        stream = np.concatenate([self._pass(p) for p in range(first, last + 1)])
        offset = start - first * self.cells.size
        return stream[offset : offset + self.epoch_size]

    def _pass(self, number: int) -> np.ndarray:
        """Pass ``number`` over the cells: all of them, shuffled by ``(seed, phase, number, PASS_STREAM)``."""
        return epoch_rng(self.seed, self.phase, number, PASS_STREAM).permutation(self.cells)

    def _with_labelled_share(self, rng: np.random.Generator) -> np.ndarray:
        """The epoch's cells once, in mini-batches whose first ``labelled_slots`` places hold labelled
        cells drawn class-balanced (each type in turn, members reshuffled as they run out)."""
        regular = self.batch_size - self.labelled_slots
        n_batches = int(np.ceil(self.epoch_size / regular))
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
            return int(np.ceil(self.epoch_size / (self.batch_size - self.labelled_slots)))
        return int(np.ceil(self.epoch_size / self.batch_size))

    def __getitem__(self, index: int) -> dict:
        rows = self.order[index * self.batch_size : (index + 1) * self.batch_size]
        targets = self.targets[rows]
        target_matrix = self.data.counts if self.reconstruct_counts else self.data.expression
        return self._batch(rows, targets, self.data.expression[rows].toarray(), target_matrix[targets].toarray())

    def _batch(self, rows: np.ndarray, targets: np.ndarray, x: np.ndarray, target: np.ndarray) -> dict:
        """The mini-batch of cells ``rows`` reconstructing cells ``targets``, given their densified rows."""
        batch = {
            "x": x,
            "target": target,
            "classes": _one_hot(self.data.train_codes[rows], len(self.data.classes)),
            "batches": _one_hot(self.data.batch_codes[rows], len(self.data.batches)),
            "target_batches": _one_hot(self.data.batch_codes[targets], len(self.data.batches)),
            "aligned_types": self.aligned_types[rows].astype(np.int32),
            "batch_codes": self.data.batch_codes[rows].astype(np.int32),
            "condition_codes": self.data.condition_codes[rows].astype(np.int32),
            "conditions": _one_hot(self.data.condition_codes[rows], self.n_conditions),
        }
        if self.reconstruct_counts:
            batch["library_size"] = self.library_size[targets]
        return batch


# One traced ``encode`` per network, dropped with the network (the function holds it weakly).
_ENCODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_encoder(network):
    """``network.encode`` as one traced function for any number of rows."""
    if network not in _ENCODERS:
        spec = tf.TensorSpec((None, network.network_config.n_genes), tf.float32)
        held = weakref.ref(network)
        _ENCODERS[network] = tf.function(lambda x: held().encode(x), input_signature=[spec])
    return _ENCODERS[network]


# One traced ``decoder`` per network (the reconstruction of a latent, for reconstruction novelty).
_DECODERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _compiled_decoder(network):
    """``network.decoder`` on a latent as one traced function for any number of rows; a
    batch-conditional decoder is told no batch (zeros), as for a cell of a batch it never saw."""
    if network not in _DECODERS:
        config = network.network_config
        spec = tf.TensorSpec((None, config.latent_dim), tf.float32)
        held = weakref.ref(network)

        def decode(latent):
            if config.conditional_decoder:
                latent = tf.concat([latent, tf.zeros((tf.shape(latent)[0], config.n_batches), latent.dtype)], axis=-1)
            return held().decoder(latent, training=False)

        _DECODERS[network] = tf.function(decode, input_signature=[spec])
    return _DECODERS[network]


def _dense_chunks(expression, batch_size: int, rows=None):
    """``(start, dense rows)`` of ``expression`` (its ``rows``, default all), ``batch_size`` rows at a
    time; the next chunk is densified while the caller works on the current one."""
    n_rows = expression.shape[0] if rows is None else len(rows)

    def dense(start: int) -> np.ndarray:
        chunk = slice(start, start + batch_size) if rows is None else rows[start : start + batch_size]
        return expression[chunk].toarray()

    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(dense, 0)
        for start in range(0, n_rows, batch_size):
            x = pending.result()
            if start + batch_size < n_rows:
                pending = pool.submit(dense, start + batch_size)
            yield start, x


def infer(network, expression, batch_size: int, rows=None, names=None, residuals=None) -> dict[str, np.ndarray]:
    """The encoder's outputs (``network.encode``: latent, class probabilities) for rows of a
    sparse matrix, ``batch_size`` rows at a time; the decoder never runs, unless ``residuals``.

    The one inference path: :meth:`scpermut.Model.transform`, the validation scores and the
    pseudo-labels of training all go through it. ``expression`` is a sparse matrix or
    :class:`~scpermut.data.stored.StoredRows` (read chunk by chunk). ``rows`` picks rows of it
    (default: all, in order) without copying the matrix; ``names`` the outputs to keep (default: all).
    The outputs are allocated once; the next chunk is densified while the current one runs.

    ``residuals``: a function of a chunk's expression and its reconstruction (the decoder on the
    chunk's latent, both ``(rows, genes)``) returning one value per row, kept as the output
    ``"residual_score"``: the reconstruction exists one chunk at a time, never for all the cells.
    """
    if not isinstance(expression, StoredRows):
        expression = sp.csr_matrix(expression, dtype=np.float32)  # no copy of a float32 CSR
    n_rows = expression.shape[0] if rows is None else len(rows)
    widths = network.encoded_widths()
    names = list(widths) if names is None else list(names)
    outputs = {name: np.empty((n_rows, widths[name]), np.float32) for name in names}
    encode = _compiled_encoder(network)
    if residuals is not None:
        decode = _compiled_decoder(network)
        outputs["residual_score"] = np.empty(n_rows, np.float32)
    for start, x in _dense_chunks(expression, batch_size, rows):
        encoded = encode(x)
        for name in names:
            outputs[name][start : start + x.shape[0]] = encoded[name].numpy()
        if residuals is not None:
            reconstruction = decode(encoded["latent"]).numpy()
            outputs["residual_score"][start : start + x.shape[0]] = residuals(x, reconstruction)
    return outputs
