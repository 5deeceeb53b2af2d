"""Training with the matrix left on disk (``--data_access disk``): rows read as asked, block-shuffled
mini-batches whose partners share the buffer, and a deterministic model."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scpermut import constants
from scpermut.data.stored import StoredRows
from scpermut.errors import InputError
from scpermut.keys import Keys
from scpermut.model.api import Model
from scpermut.model.stored_batches import StoredCellBatches
from scpermut.model.training_data import TrainingData

N_CELLS, N_GENES = 3000, 120


def _prepared(tmp_path, seed=0):
    """A small prepared-like file: 3 types x 3 batches, a QC-failed stretch, half the genes kept."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, 3, N_CELLS)
    batches = np.sort(rng.integers(0, 3, N_CELLS))  # stored batch after batch, as atlases are
    means = rng.gamma(1.0, 1.0, (3, N_GENES)) * 2
    counts = rng.poisson(means[types] + 0.3 * batches[:, None]).astype(np.float32)
    expression = np.log1p(counts)
    split = np.where(rng.random(N_CELLS) < 0.8, constants.SPLIT_TRAIN, constants.SPLIT_VALIDATION)
    passed = np.ones(N_CELLS, bool)
    passed[100:160] = False
    keys = Keys()
    obs = pd.DataFrame(
        {
            keys.class_key: pd.Categorical(np.array(["a", "b", "c"])[types]),
            keys.batch_key: pd.Categorical(np.array(["x", "y", "z"])[batches]),
            constants.SPLIT: pd.Categorical(split),
            constants.QC_PASS: passed,
        },
        index=[f"cell{i}" for i in range(N_CELLS)],
    )
    var = pd.DataFrame({"highly_variable": np.arange(N_GENES) % 2 == 0}, index=[f"G{j}" for j in range(N_GENES)])
    adata = ad.AnnData(
        X=sp.csr_matrix(expression), obs=obs, var=var, layers={constants.COUNTS_LAYER: sp.csr_matrix(counts)},
        uns={constants.PREPARE_UNS: {**keys.to_dict(), "target_sum": 1e4}},
    )
    path = tmp_path / "prepared.h5ad"
    adata.write_h5ad(path)
    return path, adata


def test_stored_rows_read_what_the_matrix_holds_in_any_order(tmp_path):
    path, adata = _prepared(tmp_path)
    rows, columns = adata.obs[constants.QC_PASS].to_numpy(), adata.var["highly_variable"].to_numpy()
    stored = StoredRows(path, "X", rows, columns)
    held = adata.X[np.flatnonzero(rows)][:, columns]
    assert stored.shape == held.shape
    rng = np.random.default_rng(1)
    for index in (np.arange(held.shape[0]), rng.permutation(held.shape[0]), rng.choice(held.shape[0], 40), np.array([5, 5, 2]), slice(7, 2500)):
        read = stored[index]
        assert read.shape == held[index].shape and (read != held[index]).nnz == 0
    np.testing.assert_allclose(stored.row_sums(), np.asarray(held.sum(axis=1)), rtol=1e-6)


def test_the_fingerprint_of_stored_data_follows_its_values(tmp_path):
    path, adata = _prepared(tmp_path)
    first = TrainingData.from_file(path).fingerprint()
    assert TrainingData.from_file(path).fingerprint() == first
    kept_value = np.flatnonzero(adata.X.indices % 2 == 0)[0]  # an even gene: a model gene
    adata.X.data[kept_value] += 1.0
    adata.write_h5ad(tmp_path / "changed.h5ad")
    assert TrainingData.from_file(tmp_path / "changed.h5ad").fingerprint() != first


def test_block_shuffled_batches_pair_cells_of_one_type_within_their_buffer(tmp_path):
    path, _ = _prepared(tmp_path)
    data = TrainingData.from_file(path)
    options = dict(batch_size=64, seed=3, phase=1, permute=True, block_cells=50, buffer_cells=400)
    batches = StoredCellBatches(data, **options)
    for epoch in (0, 1):
        batches.set_epoch(epoch)
        np.testing.assert_array_equal(np.sort(batches.order), np.arange(data.n_cells))  # every cell once
        buffer_of = np.arange(batches.order.size) // 400
        np.testing.assert_array_equal(buffer_of[batches.target_positions], buffer_of)
        labelled = data.train_codes[batches.order] >= 0
        partners = batches.order[batches.target_positions]
        np.testing.assert_array_equal(data.train_codes[partners][labelled], data.train_codes[batches.order][labelled])
        # A buffer holds blocks from several places of the file, so several batches.
        assert len(np.unique(data.batch_codes[batches.order[:400]])) > 1
    batch = batches[3]
    rows = batches.order[3 * 64 : 4 * 64]
    np.testing.assert_array_equal(batch["x"], data.expression[rows].toarray())
    np.testing.assert_array_equal(batch["target"], data.expression[batches.order[batches.target_positions[3 * 64 : 4 * 64]]].toarray())
    again = StoredCellBatches(data, **options)
    again.set_epoch(1)
    np.testing.assert_array_equal(again.order, batches.order)
    np.testing.assert_array_equal(again.target_positions, batches.target_positions)


def test_training_from_disk_is_deterministic_and_recorded(tmp_path):
    from scpermut.steps.train import train_file

    path, _ = _prepared(tmp_path)
    options = dict(epochs_warmup=1, epochs_full=2, epochs_finetune=1, seed=0, batch_size=64)
    weights = []
    for run in ("a", "b"):
        model = train_file(path, tmp_path / run, data_access="disk", **options)
        weights.append(np.concatenate([w.ravel() for w in model.network.get_weights()]))
        record = json.loads((tmp_path / run / constants.MODEL_RUN).read_text())
        assert record["data_access"] == "disk" and record["n_cells"] == N_CELLS - 60
    np.testing.assert_array_equal(weights[0], weights[1])
    in_memory = train_file(path, tmp_path / "memory", data_access="auto", **options)
    assert in_memory.record.run["data_access"] == "memory"  # a small file fits
    assert in_memory.record.run["validation"]["balanced_accuracy"] > 0.5
    assert model.record.run["validation"]["balanced_accuracy"] > 0.5


def test_disk_access_refuses_what_needs_the_cells_in_memory(tmp_path):
    from scpermut.steps.tune import read_tuning_data

    path, _ = _prepared(tmp_path)
    with pytest.raises(InputError, match="--labelled_share needs the data in memory"):
        Model(labelled_share=0.2).fit(TrainingData.from_file(path))
    with pytest.raises(InputError, match="tune holds the training cells in memory"):
        read_tuning_data(path, "cpu", False, {}, "disk")


def test_auto_access_reads_from_disk_when_the_matrix_would_fill_half_the_free_memory(tmp_path, monkeypatch):
    from scpermut.steps import train

    path, adata = _prepared(tmp_path)
    assert train.available_memory() > 0
    needed = adata.X.nnz * 8 * 60 / N_GENES  # 60 of the 120 genes are model genes
    monkeypatch.setattr(train, "available_memory", lambda: 2.5 * needed)
    assert train._automatic_access(path, with_counts=False) == "memory"
    assert train._automatic_access(path, with_counts=True) == "disk"  # the counts double it
    monkeypatch.setattr(train, "available_memory", lambda: 1.5 * needed)
    assert train._automatic_access(path, with_counts=False) == "disk"
