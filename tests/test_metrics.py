"""Metrics on cases whose answer can be worked out by hand."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from scpermut import constants, metrics


def test_perfect_predictions_score_one():
    truth = ["a"] * 5 + ["b"] * 3 + ["c"] * 2
    scores = metrics.classification_scores(truth, truth)
    for name in ("accuracy", "balanced_accuracy", "macro_f1", "mcc", "cohen_kappa", "ari", "nmi"):
        assert scores[name] == pytest.approx(1.0), name
    assert scores["fraction_unknown"] == 0.0


def test_a_known_confusion():
    # a: 4 right; b: 2 of 4 called a; c: 1 of 2 called Unknown.
    truth = ["a"] * 4 + ["b"] * 4 + ["c"] * 2
    predicted = ["a"] * 4 + ["a", "a", "b", "b"] + ["c", "Unknown"]
    scores = metrics.classification_scores(truth, predicted)
    assert scores["accuracy"] == pytest.approx(7 / 10)
    assert scores["balanced_accuracy"] == pytest.approx((1 + 0.5 + 0.5) / 3)
    assert scores["fraction_unknown"] == pytest.approx(0.1)
    # F1: a = 2*(4/6*1)/(4/6+1) = 0.8, b = 2*(1*0.5)/1.5 = 2/3, c = 2/3; "Unknown" is not a class of its own.
    assert scores["macro_f1"] == pytest.approx((0.8 + 2 / 3 + 2 / 3) / 3)
    # Cohen's kappa: observed 0.7; expected sum(p_true * p_pred) = .4*.6 + .4*.2 + .2*.1 = 0.34.
    assert scores["cohen_kappa"] == pytest.approx((0.7 - 0.34) / (1 - 0.34))

    per_class = metrics.per_class_scores(truth, predicted).set_index("class")
    assert per_class.loc["a", ["precision", "recall"]].tolist() == pytest.approx([4 / 6, 1.0])
    assert per_class.loc["c", ["precision", "recall", "n_cells"]].tolist() == pytest.approx(
        [1.0, 0.5, 2]
    )
    confusion = metrics.confusion_table(truth, predicted)
    assert list(confusion.columns) == ["a", "b", "c", "Unknown"]
    assert confusion.loc["b"].tolist() == pytest.approx([0.5, 0.5, 0, 0])
    assert np.allclose(confusion.sum(axis=1), 1)


def test_chance_predictions_score_near_zero():
    rng = np.random.default_rng(0)
    truth = rng.choice(list("abcd"), size=20_000)
    predicted = rng.choice(list("abcd"), size=20_000)
    scores = metrics.classification_scores(truth, predicted)
    assert scores["balanced_accuracy"] == pytest.approx(0.25, abs=0.02)
    for name in ("mcc", "cohen_kappa", "ari", "nmi"):
        assert abs(scores[name]) < 0.02, name


def test_rarity_groups_follow_the_class_share():
    truth = ["big"] * 900 + ["mid"] * 95 + ["tiny"] * 5
    per_class = metrics.per_class_scores(truth, truth).set_index("class")
    assert per_class["rarity"].to_dict() == {
        "big": "common (>=10%)",
        "mid": "uncommon (1-10%)",
        "tiny": "rare (<1%)",
    }
    groups = metrics.rarity_scores(per_class.reset_index())
    assert groups["n_cells"].tolist() == [5, 95, 900]


def _latents(separated: bool, n: int = 1500, seed: int = 0):
    rng = np.random.default_rng(seed)
    batches = rng.choice(["b1", "b2", "b3"], size=n)
    labels = rng.choice(["t1", "t2"], size=n)
    latent = rng.normal(size=(n, 10)) + 6 * (labels == "t2")[:, None]
    if separated:
        latent += 20 * pd.Categorical(batches).codes[:, None]
    return latent, batches, labels


def test_batch_mixing_is_high_for_mixed_and_zero_for_separated_batches():
    mixed = metrics.batch_mixing(*_latents(False)[:2])
    separated = metrics.batch_mixing(*_latents(True)[:2])
    assert mixed["batch_entropy"] > 0.9
    assert separated["batch_entropy"] == pytest.approx(0.0)
    assert not mixed["sampled"]


def test_silhouettes_reward_mixed_batches_and_separated_labels():
    mixed = metrics.batch_silhouette(*_latents(False))
    separated = metrics.batch_silhouette(*_latents(True))
    assert mixed["value"] > 0.9 > 0.5 > separated["value"]
    latent, _, labels = _latents(False)
    assert (
        metrics.label_silhouette(latent, labels)["value"] > 0.6
    )  # the two labels sit 6 standard deviations apart
    shuffled = np.random.default_rng(1).permutation(labels)
    assert metrics.label_silhouette(latent, shuffled)["value"] == pytest.approx(0.5, abs=0.02)


def test_large_data_are_sampled_with_a_seed_and_say_so():
    latent, batches, labels = _latents(False, n=3000)
    settings = metrics.MetricSettings(max_cells_neighbors=1000, max_cells_silhouette=500, seed=3)
    first = metrics.batch_mixing(latent, batches, settings)
    assert first["sampled"] and first["n_cells"] == 1000 and first["n_cells_total"] == 3000
    assert metrics.batch_mixing(latent, batches, settings) == first
    silhouette = metrics.batch_silhouette(latent, batches, labels, settings)
    assert (
        silhouette["sampled"]
        and silhouette["n_cells"] == 500
        and silhouette["n_cells_total"] == 3000
    )


def test_evaluate_scores_only_held_out_labelled_cells():
    truth = np.array(["a", "b"] * 8 + ["Unknown"] * 2)
    split = np.array(["train"] * 6 + ["validation"] * 4 + ["query"] * 6 + ["unlabelled"] * 2)
    predicted = truth.copy()
    predicted[:6] = "b"  # wrong on training cells: must not count
    predicted[10] = "b"  # one wrong query cell (true "a")
    obs = pd.DataFrame(
        {
            "cell_type": truth,
            "batch": ["x", "y"] * 9,
            constants.SPLIT: split,
            constants.PREDICTION: predicted,
            constants.CONFIDENCE: 0.9,
        }
    )
    adata = ad.AnnData(obs=obs.set_axis([f"c{i}" for i in range(18)]))
    adata.obsm[constants.LATENT] = np.random.default_rng(0).normal(size=(18, 4))
    result = metrics.evaluate(adata)
    assert result["evaluation_set"] == "query"
    assert result["sets"]["query"]["scores"]["n_cells"] == 6
    assert result["sets"]["query"]["scores"]["accuracy"] == pytest.approx(5 / 6)
    assert result["sets"]["validation"]["scores"]["accuracy"] == 1.0
    assert metrics.headline(result)["balanced_accuracy"] == pytest.approx((2 / 3 + 1) / 2)


def test_evaluate_without_split_treats_every_labelled_cell_as_query():
    obs = pd.DataFrame(
        {"cell_type": ["a", "b", "a", "Unknown"], constants.PREDICTION: ["a", "b", "b", "a"]},
        index=list("wxyz"),
    )
    result = metrics.evaluate(ad.AnnData(obs=obs))
    assert result["evaluation_set"] == "query"
    assert result["sets"]["query"]["scores"]["n_cells"] == 3
    assert result["latent"] is None
