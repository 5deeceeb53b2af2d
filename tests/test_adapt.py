"""Query adaptation: new batches mapped onto a saved reference, the model folder untouched."""

from __future__ import annotations

import hashlib
import logging
import shutil

import anndata as ad
import numpy as np
import pytest
from click.testing import CliRunner

from scpermut import constants
from scpermut.annotation import annotate
from scpermut.cli import main
from scpermut.model import adapt
from scpermut.model.api import Model
from scpermut.model.losses import class_kernel_mmd
from scpermut.model.novelty import neighbourhood_median

# Tiny and short: a reference of the two control samples, the stimulated ones are the query.
SETTINGS = {
    "hidden_layers": (64,),
    "latent_dim": 8,
    "batch_size": 64,
    "epochs_warmup": 2,
    "epochs_full": 6,
    "epochs_finetune": 1,
    "min_epochs": 0,
}
QUERY_BATCHES = ("stim101", "stim107")
# Removed from the reference of `novel_model`, kept in the query: a type the reference never saw.
NOVEL_TYPE = "B cells"


@pytest.fixture(scope="module")
def reference_model(tmp_path_factory, prepared_path):
    """A model trained on the control samples only, and its folder."""
    prepared = ad.read_h5ad(prepared_path)
    reference = prepared[prepared.obs[constants.ROLE] == "reference"].copy()
    model_dir = tmp_path_factory.mktemp("adapt") / "model"
    Model(seed=0, **SETTINGS).fit(reference).save(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def novel_model(tmp_path_factory, prepared_path):
    """A model trained on the control samples without their B cells, and its folder."""
    prepared = ad.read_h5ad(prepared_path)
    keep = (prepared.obs[constants.ROLE] == "reference").to_numpy() & (prepared.obs["cell_type"] != NOVEL_TYPE).to_numpy()
    model_dir = tmp_path_factory.mktemp("adapt_novel") / "model"
    Model(seed=0, **SETTINGS).fit(prepared[keep].copy()).save(model_dir)
    return model_dir


@pytest.fixture(scope="module")
def query(prepared_path):
    prepared = ad.read_h5ad(prepared_path)
    return prepared[prepared.obs["batch"].isin(QUERY_BATCHES).to_numpy()].copy()


def _folder_digests(folder):
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in sorted(folder.iterdir())}


def test_the_model_folder_keeps_a_stratified_reference_latent_sample(reference_model, prepared_path):
    model = Model.load(reference_model)
    sample = model.record.reference
    prepared = ad.read_h5ad(prepared_path)
    labelled = prepared.obs[constants.SPLIT].isin([constants.SPLIT_TRAIN, constants.SPLIT_VALIDATION])
    # Below the sample's size limit every labelled cell is kept, each with its type and batch.
    counts = np.bincount(sample["classes"], minlength=len(model.classes))
    expected = prepared.obs.loc[labelled.to_numpy(), "cell_type"].value_counts()
    assert dict(zip(model.classes, counts, strict=True)) == expected.to_dict()
    assert set(np.asarray(model.record.batches)[sample["batches"]]) == {"ctrl101", "ctrl107"}
    assert sample["latent"].shape == (counts.sum(), SETTINGS["latent_dim"])


def test_adaptation_aligns_new_batches_and_leaves_the_model_folder_byte_identical(reference_model, query):
    before = _folder_digests(reference_model)
    model = Model.load(reference_model)
    weights = [w.copy() for w in model.network.get_weights()]
    frozen = annotate(query, model, adapt=False, umap=False, copy=True)
    adapted = annotate(query, model, umap=False, copy=True)

    assert _folder_digests(reference_model) == before
    for old, new in zip(weights, model.network.get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    report = adapted.uns[constants.UNS]["adaptation"]["batches"]
    assert sorted(report) == list(QUERY_BATCHES)
    for batch in report.values():
        assert batch["steps"] > 0 and batch["n_pseudo_labelled"] > 0
        assert batch["alignment_last"] < batch["alignment_first"]
    assert not np.array_equal(adapted.obsm[constants.LATENT], frozen.obsm[constants.LATENT])
    assert frozen.uns[constants.UNS]["adaptation"] == {}
    probabilities = adapted.obsm[constants.PROBABILITIES]
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(adapted.obs[constants.CONFIDENCE], probabilities.max(axis=1))


def test_frozen_mapping_and_known_batches_are_exactly_the_frozen_encoder(reference_model, query, prepared_path):
    model = Model.load(reference_model)
    expression = query[:, model.genes].X
    plain = model.transform(expression)
    frozen = annotate(query, model, adapt=False, umap=False, copy=True)
    np.testing.assert_array_equal(frozen.obsm[constants.LATENT], plain["latent"])
    np.testing.assert_array_equal(frozen.obsm[constants.PROBABILITIES], plain["class_probabilities"])
    # Cells of batches the model trained on are never adapted, whatever `adapt` says.
    prepared = ad.read_h5ad(prepared_path)
    reference = prepared[prepared.obs[constants.ROLE] == "reference"].copy()
    with_adapt = annotate(reference, model, umap=False, copy=True)
    np.testing.assert_array_equal(with_adapt.obsm[constants.LATENT], model.transform(reference[:, model.genes].X)["latent"])


def test_adaptation_is_deterministic_and_each_batch_maps_alone_as_in_company(reference_model, query):
    model = Model.load(reference_model)
    first = annotate(query, model, umap=False, copy=True)
    again = annotate(query, Model.load(reference_model), umap=False, copy=True)
    np.testing.assert_array_equal(first.obsm[constants.LATENT], again.obsm[constants.LATENT])
    alone = query[query.obs["batch"] == QUERY_BATCHES[0]].copy()
    annotate(alone, model, umap=False)
    rows = (query.obs["batch"] == QUERY_BATCHES[0]).to_numpy()
    np.testing.assert_array_equal(alone.obsm[constants.LATENT], first.obsm[constants.LATENT][rows])


def test_an_older_model_folder_maps_frozen_and_says_why(reference_model, query, tmp_path, caplog):
    old = tmp_path / "old_model"
    shutil.copytree(reference_model, old)
    (old / constants.MODEL_REFERENCE_SAMPLE).unlink()
    model = Model.load(old)
    with caplog.at_level(logging.WARNING):
        mapped = annotate(query, model, umap=False, copy=True)
    assert "needs a model trained by this version" in caplog.text
    np.testing.assert_array_equal(mapped.obsm[constants.LATENT], model.transform(query[:, model.genes].X)["latent"])


def _adapted_without_gate(model_dir):
    model = Model.load(model_dir)
    model.record.training["pseudo_label_novelty"] = 1.0  # the option's "no gate"
    return model


def test_the_novelty_gate_keeps_an_unseen_type_off_the_known_ones(novel_model, query):
    novel = (query.obs["cell_type"] == NOVEL_TYPE).to_numpy()
    model = Model.load(novel_model)
    assert model.record.novelty and model.settings.pseudo_label_novelty < 1
    frozen = annotate(query, model, adapt=False, umap=False, copy=True)
    gated = annotate(query, model, umap=False, copy=True)
    ungated = annotate(query, _adapted_without_gate(novel_model), umap=False, copy=True)

    gated_report = gated.uns[constants.UNS]["adaptation"]
    assert gated_report["novelty_gate"] == model.settings.pseudo_label_novelty
    assert ungated.uns[constants.UNS]["adaptation"]["novelty_gate"] == ""  # None, as written to uns
    for name, batch in gated_report["batches"].items():
        assert batch["n_novelty_gated"] > 0, name
        assert batch["n_pseudo_labelled"] < ungated.uns[constants.UNS]["adaptation"]["batches"][name]["n_pseudo_labelled"]
    # The unseen cells start novel; without the gate adaptation pulls them onto known types (their
    # novelty falls), with it they stay clearly more novel.
    def unseen_novelty(mapped):
        return float(model.novelty(mapped.obsm[constants.LATENT])[novel].mean())

    assert unseen_novelty(frozen) > 0.85
    assert unseen_novelty(gated) > unseen_novelty(ungated) + 0.1
    # The same in obs, the latent's neighbourhood novelty alone (the reconstruction novelty, which
    # reads the frozen latent, is the same with or without the gate: kept out).
    def written_latent_novelty(model):
        model.record.reconstruction = {}
        return float(annotate(query, model, umap=False, copy=True).obs[constants.NOVELTY].to_numpy()[novel].mean())

    assert written_latent_novelty(Model.load(novel_model)) > written_latent_novelty(_adapted_without_gate(novel_model)) + 0.1


def test_pulled_cells_gate_novel_cells_but_not_a_batch_novel_as_a_whole():
    probabilities = np.array([[0.9, 0.1], [0.95, 0.05], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    in_reference = np.array([True, True])
    cells, gated = adapt.pulled_cells(probabilities, 0.7, in_reference)
    assert cells.tolist() == [0, 1, 2] and gated == 0
    # Cell 1 is novel: it pulls on nothing (cell 3 is unsure anyway and not counted as gated).
    cells, gated = adapt.pulled_cells(probabilities, 0.7, in_reference, np.array([0.1, 0.9, 0.5, 0.95]), 0.8)
    assert cells.tolist() == [0, 2] and gated == 1
    # Median novelty above the gate: the batch looks novel as a whole, nothing is gated.
    cells, gated = adapt.pulled_cells(probabilities, 0.7, in_reference, np.array([0.85, 0.9, 0.5, 0.95]), 0.8)
    assert cells.tolist() == [0, 1, 2] and gated == 0
    # A class missing from the reference sample never pulls.
    cells, _ = adapt.pulled_cells(probabilities, 0.7, np.array([True, False]))
    assert cells.tolist() == [0, 1]


def test_a_model_folder_without_novelty_adapts_without_the_gate(novel_model, query, tmp_path):
    old = tmp_path / "no_novelty"
    shutil.copytree(novel_model, old)
    (old / constants.MODEL_NOVELTY).unlink()
    model = Model.load(old)
    assert not model.record.novelty
    mapped = annotate(query, model, umap=False, copy=True)
    report = mapped.uns[constants.UNS]["adaptation"]
    assert report["novelty_gate"] == ""
    assert sorted(report["batches"]) == list(QUERY_BATCHES)
    for batch in report["batches"].values():
        assert batch["steps"] > 0 and batch["n_novelty_gated"] == 0
    assert constants.NOVELTY not in mapped.obs
    # Without a novelty model the adaptation is exactly the one with the gate off.
    ungated = annotate(query, _adapted_without_gate(novel_model), umap=False, copy=True)
    np.testing.assert_array_equal(mapped.obsm[constants.LATENT], ungated.obsm[constants.LATENT])


def test_gated_adaptation_is_deterministic(novel_model, query):
    first = annotate(query, Model.load(novel_model), umap=False, copy=True)
    again = annotate(query, Model.load(novel_model), umap=False, copy=True)
    assert first.uns[constants.UNS]["adaptation"]["novelty_gate"] != ""
    np.testing.assert_array_equal(first.obsm[constants.LATENT], again.obsm[constants.LATENT])
    np.testing.assert_array_equal(first.obsm[constants.PROBABILITIES], again.obsm[constants.PROBABILITIES])
    np.testing.assert_array_equal(first.obs[constants.NOVELTY], again.obs[constants.NOVELTY])


def test_predict_command_takes_no_adapt(reference_model, query, tmp_path):
    source, out = tmp_path / "query.h5ad", tmp_path / "annotated.h5ad"
    query.write_h5ad(source)
    result = CliRunner().invoke(main, ["predict", str(source), "--model", str(reference_model), "--out", str(out), "--no-umap", "--no-adapt"])
    assert result.exit_code == 0, result.output
    written = ad.read_h5ad(out)
    assert not written.uns[constants.UNS]["prediction"]["adapt"]
    assert constants.UNS in written.uns and not written.uns[constants.UNS].get("adaptation")


def test_class_kernel_mmd_is_zero_for_one_distribution_and_grows_with_a_shift():
    import tensorflow as tf

    rng = np.random.default_rng(0)
    cells = rng.normal(size=(60, 4)).astype(np.float32)
    one_hot = np.eye(2, dtype=np.float32)[np.arange(60) % 2]
    same, counts = class_kernel_mmd(cells, one_hot, cells, one_hot)
    np.testing.assert_allclose(np.asarray(same), 0.0, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(counts), [30, 30])
    shifted = tf.Variable(cells + np.float32(1.0))
    with tf.GradientTape() as tape:
        moved, _ = class_kernel_mmd(shifted, one_hot, cells, one_hot)
        total = tf.reduce_sum(moved)
    assert (np.asarray(moved) > 0.05).all()
    assert np.abs(tape.gradient(total, shifted).numpy()).sum() > 0
    # A class with no source cell adds nothing.
    only_first = one_hot * np.array([1.0, 0.0], dtype=np.float32)
    partial, _ = class_kernel_mmd(cells + 1.0, only_first, cells, one_hot)
    assert float(np.asarray(partial)[1]) == 0.0



def test_reconstruction_novelty_is_saved_deterministic_and_judges_a_shifted_batch_against_itself(novel_model, query, caplog):
    """The stimulated query reconstructs worse than the control reference as a whole (a condition
    the reference lacks): each batch is then judged against its own median, not all called Unknown."""
    model = Model.load(novel_model)
    assert (novel_model / constants.MODEL_RECONSTRUCTION_NOVELTY).is_file() and model.record.reconstruction
    assert model.record.run["reconstruction_novelty"]["fitted_on"] == model.record.run["novelty"]["fitted_on"]
    latent_only = Model.load(novel_model)
    latent_only.record.reconstruction = {}
    for adapt_query in (False, True):
        with caplog.at_level(logging.INFO):
            first = annotate(query, Model.load(novel_model), adapt=adapt_query, umap=False, copy=True)
        assert "reconstructs worse than the reference as a whole" in caplog.text
        caplog.clear()
        again = annotate(query, Model.load(novel_model), adapt=adapt_query, umap=False, copy=True)
        np.testing.assert_array_equal(first.obs[constants.NOVELTY], again.obs[constants.NOVELTY])
        np.testing.assert_array_equal(first.obs[constants.PREDICTION], again.obs[constants.PREDICTION])
        before = annotate(query, latent_only, adapt=adapt_query, umap=False, copy=True)
        # The latent and the probabilities are those of the latent novelty alone; novelty only rises.
        np.testing.assert_array_equal(first.obsm[constants.LATENT], before.obsm[constants.LATENT])
        np.testing.assert_array_equal(first.obsm[constants.PROBABILITIES], before.obsm[constants.PROBABILITIES])
        assert (first.obs[constants.NOVELTY].to_numpy() >= before.obs[constants.NOVELTY].to_numpy()).all()
        unknown = first.obs[constants.PREDICTION].astype(str).to_numpy() == "Unknown"
        assert unknown.mean() < 0.5


def test_a_model_folder_without_reconstruction_novelty_never_runs_the_decoder(novel_model, query, tmp_path, monkeypatch):
    old = tmp_path / "no_reconstruction"
    shutil.copytree(novel_model, old)
    (old / constants.MODEL_RECONSTRUCTION_NOVELTY).unlink()
    with_file = {adapt_query: annotate(query, Model.load(novel_model), adapt=adapt_query, umap=False, copy=True) for adapt_query in (False, True)}

    def no_decoder(network):
        raise AssertionError("the decoder ran")

    monkeypatch.setattr("scpermut.model.minibatches._compiled_decoder", no_decoder)
    for adapt_query in (False, True):
        model = Model.load(old)
        assert not model.record.reconstruction
        mapped = annotate(query, model, adapt=adapt_query, umap=False, copy=True)
        np.testing.assert_array_equal(mapped.obsm[constants.LATENT], with_file[adapt_query].obsm[constants.LATENT])
        latent_only = mapped.obs[constants.NOVELTY].to_numpy()
        expected = neighbourhood_median(mapped.obsm[constants.LATENT], model.novelty(mapped.obsm[constants.LATENT]), 0)
        np.testing.assert_array_equal(latent_only, expected)
