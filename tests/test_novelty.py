"""Novelty: known types score about uniformly, unseen ones near 1; neighbourhood averaging;
a model that never saw a type calls it Unknown and keeps the known ones."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scpermut import Model, constants, prepare_anndata
from scpermut.data.preprocess import PrepareSettings
from scpermut.model.novelty import NoveltyModel, neighbourhood_median, shifted_batches


def _cells(rng, centres, n_per_type, spread=1.0):
    codes = np.repeat(np.arange(len(centres)), n_per_type)
    return np.asarray(centres)[codes] + rng.normal(scale=spread, size=(codes.size, len(centres[0]))), codes


def test_known_types_score_uniformly_and_an_unseen_type_near_one():
    rng = np.random.default_rng(0)
    centres = [[0, 0, 0], [8, 0, 0], [0, 8, 0]]
    latent, codes = _cells(rng, centres, 300)
    held_out, _ = _cells(rng, centres, 200)
    model = NoveltyModel.fit(latent, codes, held_out)
    known, _ = _cells(rng, centres, 200)
    novelty = model.novelty(known)
    assert 0.4 < novelty.mean() < 0.6 and (novelty > 0.99).mean() < 0.02
    unseen, _ = _cells(rng, [[0, 0, 10]], 100)
    assert (model.novelty(unseen) > 0.99).mean() > 0.95
    again = NoveltyModel.from_arrays(model.to_arrays())
    np.testing.assert_array_equal(again.novelty(unseen), model.novelty(unseen))


def test_each_type_is_judged_at_its_own_spread():
    rng = np.random.default_rng(1)
    wide, wide_codes = _cells(rng, [[0, 0]], 400, spread=5.0)
    tight, tight_codes = _cells(rng, [[30, 0]], 400, spread=0.5)
    model = NoveltyModel.fit(np.vstack([wide, tight]), np.concatenate([wide_codes, tight_codes + 1]), np.vstack([wide[:100], tight[:100]]))
    # 3 spreads off the tight type is far more novel than 3 spreads... of the tight type's own scale,
    # while the same distance inside the wide type is typical.
    assert model.novelty(np.array([[30.0, 3.0]]))[0] > 0.99
    assert model.novelty(np.array([[0.0, 3.0]]))[0] < 0.9


def test_neighbourhood_median_follows_the_nearest_cells_and_samples_large_data(monkeypatch):
    latent = np.concatenate([np.zeros((20, 2)), np.full((20, 2), 10.0)]) + np.arange(40)[:, None] * 1e-3
    values = np.concatenate([np.zeros(20), np.ones(20)])
    values[3] = 1.0  # a lone high value among low ones
    smoothed = neighbourhood_median(latent, values, seed=0, k=15)
    assert smoothed[3] < 0.2 and (smoothed[20:] == 1.0).all()
    monkeypatch.setattr("scpermut.model.novelty.MAX_NEIGHBOURHOOD_CELLS", 25)
    sampled = neighbourhood_median(latent, values, seed=0, k=5)
    np.testing.assert_array_equal(sampled, neighbourhood_median(latent, values, seed=0, k=5))
    assert sampled[:20].mean() < 0.3 and sampled[20:].mean() > 0.9


def test_a_batch_novel_as_a_whole_is_flagged():
    novelty = np.array([0.95, 0.97, 0.99, 0.2, 0.5, 0.99])
    batches = np.array([0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(shifted_batches(novelty, batches, 0.9), [0])


def _atlas(seed=0, n_per_group=40):
    """Raw counts: types A, B, C in three reference batches; the query batch also holds type D."""
    rng = np.random.default_rng(seed)
    n_genes = 60
    profiles = {name: rng.gamma(1.0, 3.0, n_genes) for name in "ABCD"}
    rows, obs = [], []
    for batch, types in (("r1", "ABC"), ("r2", "ABC"), ("r3", "ABC"), ("q", "ABCD")):
        shift = rng.gamma(8.0, 1 / 8.0, n_genes)
        for name in types:
            rows.append(rng.poisson(profiles[name] * shift, size=(n_per_group, n_genes)))
            obs += [{"cell_type": name, "batch": batch, "query": batch == "q"}] * n_per_group
    obs = pd.DataFrame(obs, index=[f"c{i}" for i in range(len(obs))])
    return ad.AnnData(X=sp.csr_matrix(np.vstack(rows).astype(np.float32)), obs=obs, var=pd.DataFrame(index=[f"G{j}" for j in range(n_genes)]))


@pytest.mark.slow
def test_a_type_the_reference_never_saw_is_called_unknown_and_known_types_are_kept():
    cells = _atlas()
    prepared = prepare_anndata(cells, query_key="query", settings=PrepareSettings(n_top_genes=60, min_shared_genes=10, seed=0))
    assert (prepared.obs[constants.SPLIT] == constants.SPLIT_CALIBRATION).any()
    model = Model(hidden_layers=(32,), latent_dim=8, epochs_warmup=5, epochs_full=15, epochs_finetune=2, min_epochs=0, seed=0)
    model.fit(prepared)
    assert model.record.run["novelty"]["fitted_on"] == "the calibration batch"
    query = prepared[prepared.obs["query"].to_numpy()].copy()
    # A small set (40 unseen cells): judged at 0.9; the default's measurement is in docs/usage.md.
    model.predict(query, umap=False, novelty_threshold=0.9)
    unseen = query.obs["cell_type"].to_numpy() == "D"
    unknown = query.obs[constants.PREDICTION].astype(str).to_numpy() == "Unknown"
    novelty = query.obs[constants.NOVELTY].to_numpy()
    assert ((0 <= novelty) & (novelty <= 1)).all()
    assert unknown[unseen].mean() >= 0.8
    assert unknown[~unseen].mean() <= 0.1
    assert query.uns[constants.UNS]["prediction"]["novelty_threshold"] == 0.9
