"""Permutation targets and mini-batches: same class, other batch, reproducible from the seed."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from scpermut.model.minibatches import CellBatches
from scpermut.model.permutation import epoch_rng, permutation_targets, pseudo_label_targets
from scpermut.model.training_data import TrainingData

# 0/1 are classes, -1 unlabelled; class 2 exists in batch 0 only.
CLASSES = np.array([0, 0, 0, 0, 1, 1, 1, 1, -1, -1, 2, 2])
BATCHES = np.array([0, 0, 1, 1, 0, 1, 1, 1, 0, 1, 0, 0])


def test_targets_share_the_class_and_unlabelled_cells_reconstruct_themselves():
    for epoch in range(20):
        targets = permutation_targets(
            CLASSES, BATCHES, epoch_rng(0, 1, epoch), across_batches=False
        )
        labelled = CLASSES >= 0
        np.testing.assert_array_equal(CLASSES[targets[labelled]], CLASSES[labelled])
        np.testing.assert_array_equal(targets[~labelled], np.flatnonzero(~labelled))


def test_targets_come_from_another_batch_when_the_class_has_one():
    for epoch in range(20):
        targets = permutation_targets(
            CLASSES, BATCHES, epoch_rng(0, 1, epoch), across_batches=True, min_partners=1
        )
        in_two_batches = np.isin(CLASSES, [0, 1])
        assert (BATCHES[targets[in_two_batches]] != BATCHES[in_two_batches]).all()
        np.testing.assert_array_equal(CLASSES[targets[CLASSES == 2]], 2)


def test_targets_are_reproducible_from_seed_and_epoch_and_redrawn_otherwise():
    def draw(seed, epoch):
        return permutation_targets(
            CLASSES, BATCHES, epoch_rng(seed, 1, epoch), across_batches=False
        )

    np.testing.assert_array_equal(draw(0, 3), draw(0, 3))
    assert not np.array_equal(draw(0, 3), draw(0, 4))
    assert not np.array_equal(draw(0, 3), draw(1, 3))


def _data() -> TrainingData:
    expression = sp.csr_matrix(np.arange(12 * 5, dtype=np.float32).reshape(12, 5))
    return TrainingData(
        expression=expression,
        counts=None,
        genes=[f"G{i}" for i in range(5)],
        classes=["a", "b", "c"],
        batches=["x", "y"],
        train_codes=CLASSES,
        validation_codes=np.full(12, -1),
        batch_codes=BATCHES,
        preprocess={},
    )


def test_cell_batches_densify_one_batch_with_permuted_targets():
    data = _data()
    batches = CellBatches(data, batch_size=5, seed=0, phase=1, permute=True)
    assert len(batches) == 3
    batches.set_epoch(2)
    batch = batches[0]
    rows = batches.order[:5]
    assert batch["x"].shape == (5, 5) and isinstance(batch["x"], np.ndarray)
    np.testing.assert_array_equal(batch["x"], data.expression[rows].toarray())
    np.testing.assert_array_equal(batch["target"], data.expression[batches.targets[rows]].toarray())
    labelled = CLASSES[rows] >= 0
    np.testing.assert_array_equal(batch["classes"].sum(axis=1), labelled.astype(np.float32))
    np.testing.assert_array_equal(batch["batches"].argmax(axis=1), BATCHES[rows])
    assert batches[2]["x"].shape == (2, 5)
    # Every cell is fed, unlabelled and query cells included: the adversary sees them all.
    np.testing.assert_array_equal(np.sort(batches.order), np.arange(12))


def test_cell_batches_replay_an_epoch_exactly():
    first = CellBatches(_data(), batch_size=4, seed=3, phase=1, permute=True)
    second = CellBatches(_data(), batch_size=4, seed=3, phase=1, permute=True)
    first.set_epoch(5)
    second.set_epoch(0)
    second.set_epoch(5)
    for index in range(len(first)):
        for key in ("x", "target", "classes", "batches"):
            np.testing.assert_array_equal(first[index][key], second[index][key])


def test_partner_pool_falls_back_to_the_whole_class_when_other_batches_hold_too_few():
    # Class 0: one cell in batch 1, 30 in batch 0. Across batches only, all 30 would copy cell 0.
    classes = np.zeros(31, dtype=np.int64)
    batches = np.r_[1, np.zeros(30, dtype=np.int64)]
    collapsed = permutation_targets(classes, batches, epoch_rng(0, 1, 0), min_partners=1)
    assert set(collapsed[1:]) == {0}
    targets = permutation_targets(classes, batches, epoch_rng(0, 1, 0), min_partners=5)
    assert np.unique(targets[1:]).size > 10  # drawn from the whole class, same batch included
    # The single cell of batch 1 still has 30 partners elsewhere.
    assert batches[targets[0]] == 0


def test_labelled_share_puts_class_balanced_labelled_cells_in_every_mini_batch():
    codes = np.full(100, -1)
    codes[:6] = [0, 0, 0, 0, 1, 2]  # 6 labelled cells of 3 types among 100
    data = TrainingData(
        expression=sp.csr_matrix(np.ones((100, 2), np.float32)),
        counts=None,
        genes=["G0", "G1"],
        classes=["a", "b", "c"],
        batches=["x"],
        train_codes=codes,
        validation_codes=np.full(100, -1),
        batch_codes=np.zeros(100, dtype=np.int64),
        preprocess={},
    )
    batches = CellBatches(data, batch_size=10, seed=0, phase=1, labelled_share=0.3)
    assert batches.labelled_slots == 3 and len(batches) == 15  # 100 cells, 7 regular per batch
    fed = np.concatenate([batches.order[i * 10 : (i + 1) * 10] for i in range(len(batches))])
    assert set(range(100)) <= set(fed)  # every cell still fed each epoch
    for index in range(len(batches)):
        classes = batches[index]["classes"]
        assert classes.sum() >= 3
        assert (classes[:3].sum(axis=0) == 1).all()  # one of each type in the labelled slots
    plain = CellBatches(data, batch_size=10, seed=0, phase=1)
    assert plain.labelled_slots == 0 and len(plain) == 10


def test_pseudo_labelled_cells_reconstruct_a_labelled_cell_of_their_predicted_type():
    # Labelled: class 0 in batches 0 and 1, class 1 in batch 0 only; cells 8-14 have no label.
    classes = np.array([0, 0, 0, 0, 0, 0, 1, 1] + [-1] * 7)
    batches = np.array([0, 0, 0, 1, 1, 1, 0, 0, 2, 2, 2, 0, 2, 2, 0])
    # 8, 9, 11: sure of class 0; 10, 14: sure of class 1; 12: class 2 has no labelled cell;
    # 13: the classifier is unsure.
    pseudo = np.array([-1] * 8 + [0, 0, 1, 0, 2, -1, 1])
    start = permutation_targets(classes, batches, epoch_rng(0, 1, 0), min_partners=2)
    draw = lambda: pseudo_label_targets(  # noqa: E731
        start, pseudo, classes, batches, epoch_rng(0, 1, 0, 2), min_partners=2
    )
    targets = draw()
    np.testing.assert_array_equal(targets[:8], start[:8])  # labelled cells keep their partners
    for cell in (8, 9, 10, 11, 14):
        assert classes[targets[cell]] == pseudo[cell]
    assert batches[targets[11]] == 1  # class 0 has partners outside batch 0
    # Class 1's labelled cells all sit in batch 0: cell 14 (batch 0) still gets one of them.
    assert targets[14] in (6, 7)
    assert targets[12] == 12 and targets[13] == 13
    np.testing.assert_array_equal(targets, draw())


def test_cell_batches_ask_for_pseudo_labels_at_every_draw():
    data = _data()
    calls = []

    def sure_of_class_1(cells):
        calls.append(cells)
        return np.where(data.train_codes < 0, 1, -1)

    batches = CellBatches(
        data, batch_size=4, seed=0, phase=1, permute=True, pseudo_labels=sure_of_class_1
    )
    unlabelled = np.flatnonzero(data.train_codes < 0)
    assert (data.train_codes[batches.targets[unlabelled]] == 1).all()
    batches.set_epoch(1)
    assert len(calls) == 2
    np.testing.assert_array_equal(calls[1], np.arange(12))  # every cell is in each epoch


def test_capped_epochs_walk_through_shuffled_passes_asking_pseudo_labels_for_their_cells_only():
    data = _data()
    asked = []

    def none_sure(cells):
        asked.append(cells)
        return np.full(12, -1)

    def epochs(**options):
        batches = CellBatches(data, batch_size=2, seed=5, phase=1, permute=True, pseudo_labels=none_sure, **options)
        drawn = []
        for epoch in range(6):
            batches.set_epoch(epoch)
            drawn.append(batches.order.copy())
            assert len(batches) == 3
        return np.concatenate(drawn)

    drawn = epochs(epoch_cells=5)  # 6 epochs of 5 cells: passes of 12 cells, then 6 of a third
    assert all(sorted(drawn[start : start + 12]) == list(range(12)) for start in (0, 12))
    assert len(set(drawn[24:])) == 6
    assert all(np.array_equal(cells, np.unique(order)) for cells, order in zip(asked[1:7], drawn.reshape(6, 5), strict=True))  # [0]: the draw at construction
    np.testing.assert_array_equal(drawn, epochs(epoch_cells=5))  # the same seed, the same epochs
    whole = CellBatches(data, batch_size=2, seed=5, phase=1, epoch_cells=50)
    assert whole.epoch_size == 12 and len(whole) == 6
