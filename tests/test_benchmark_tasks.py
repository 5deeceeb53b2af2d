"""The benchmark's splits and scoring (benchmarks/tasks.py, scoring.py) on the shipped CellBench data.

The peers themselves need the benchmark environment and run only under benchmarks/run.py;
what is tested here is what decides which cells each method may learn from and how every
method is scored.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scoring  # noqa: E402
import tasks  # noqa: E402
from common import BATCH, EVALUATED, LABEL, ROLE, TRUTH, UNKNOWN  # noqa: E402


@pytest.fixture(scope="module")
def cellbench(assets_dir):
    return tasks.Dataset("cellbench_3cl", "cellbench_3cl_3tech.h5ad", "cell_line").load(Path(assets_dir) / "test_data")


def test_leave_one_batch_out_hides_every_label_of_the_query_batch(cellbench):
    split = tasks.leave_one_batch_out(cellbench, "sc_celseq2")
    query = (split.obs[BATCH] == "sc_celseq2").to_numpy()
    assert (split.obs[ROLE].to_numpy()[query] == "query").all()
    assert (split.obs[LABEL].to_numpy()[query] == UNKNOWN).all()
    assert (split.obs[LABEL].to_numpy()[~query] == split.obs[TRUTH].to_numpy()[~query]).all()
    assert np.array_equal(split.obs[EVALUATED].to_numpy(), query)


def test_partial_atlas_labels_the_asked_share_of_each_type_reproducibly(cellbench):
    first = tasks.partial_atlas(cellbench, 0.1, seed=3)
    again = tasks.partial_atlas(cellbench, 0.1, seed=3)
    other = tasks.partial_atlas(cellbench, 0.1, seed=4)
    assert np.array_equal(first.obs[LABEL].to_numpy(), again.obs[LABEL].to_numpy())
    assert not np.array_equal(first.obs[LABEL].to_numpy(), other.obs[LABEL].to_numpy())
    labelled = first.obs[LABEL] != UNKNOWN
    for cell_type, size in first.obs[TRUTH].value_counts().items():
        assert labelled[first.obs[TRUTH] == cell_type].sum() == round(0.1 * size)
    assert np.array_equal(first.obs[EVALUATED].to_numpy(), ~labelled.to_numpy())


def test_rare_type_is_about_one_percent_of_the_reference(cellbench):
    split = tasks.rare_type(cellbench, "H2228", seed=0)
    reference = split.obs[LABEL] != UNKNOWN
    share = (split.obs[LABEL][reference] == "H2228").mean()
    assert 0.005 < share < 0.02
    query_batch = split.uns["bench_rare"]["query_batch"]
    assert query_batch == "sc_10x"  # the batch holding most H2228 cells
    assert (split.obs[TRUTH][split.obs[BATCH] == query_batch] == "H2228").sum() == (cellbench.obs[TRUTH][cellbench.obs[BATCH] == query_batch] == "H2228").sum()


def test_scoring_gives_a_perfect_prediction_full_marks_and_a_wrong_rare_type_zero(cellbench):
    split = tasks.rare_type(cellbench, "H2228", seed=0)
    truth = split.obs[TRUTH].astype(str).to_numpy()
    perfect = scoring.score(split, truth, None)
    assert perfect["balanced_accuracy"] == pytest.approx(1.0)
    assert perfect["rare_type_f1"] == pytest.approx(1.0)
    assert perfect["f1 rare (<1%)"] == pytest.approx(1.0)
    missed = np.where(truth == "H2228", "H1975", truth)
    scores = scoring.score(split, missed, None)
    assert scores["rare_type_f1"] == 0.0
    assert scores["balanced_accuracy"] == pytest.approx(2 / 3)
