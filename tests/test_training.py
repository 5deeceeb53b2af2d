"""Training: phases and ablation switches, early stopping, checkpoint + resume, determinism across processes."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from click.testing import CliRunner
from conftest import package_only_environment

from scpermut import constants
from scpermut.cli import main
from scpermut.errors import InputError
from scpermut.model import persistence
from scpermut.model.api import Model
from scpermut.model.settings import NetworkConfig, TrainingSettings
from scpermut.model.train import plan_phases, select_device, train_network
from scpermut.model.training_data import TrainingData
from scpermut.steps.train import train_file

TINY_NETWORK = {"hidden_layers": (16,), "latent_dim": 4}
# Every module on, the batch head included (its weight is 0 by default).
TINY_TRAINING = {
    "dann_weight": 0.5,
    "batch_size": 32,
    "epochs_warmup": 1,
    "epochs_full": 3,
    "epochs_finetune": 1,
    "patience": 5,
}
SCPERMUT = str(Path(sys.executable).with_name("scpermut"))


def make_prepared(
    n_cells: int = 120,
    n_genes: int = 30,
    batches=("b1", "b2"),
    seed: int = 0,
    labelled: bool = True,
) -> ad.AnnData:
    """A small AnnData shaped like ``prepared.h5ad``: 3 cell types with distinct profiles, a batch shift."""
    rng = np.random.default_rng(seed)
    types = np.array(["alpha", "beta", "gamma"])[np.arange(n_cells) % 3]
    batch = np.array(batches)[(np.arange(n_cells) // 3) % len(batches)]
    profile = {name: rng.gamma(2.0, 2.0, n_genes) for name in np.unique(types)}
    shift = {name: rng.gamma(5.0, 0.2, n_genes) for name in batches}
    counts = np.stack(
        [rng.poisson(profile[t] * shift[b]) for t, b in zip(types, batch, strict=True)]
    ).astype(np.float32)
    split = np.array(["train", "train", "train", "validation", "query"])[np.arange(n_cells) % 5]
    if not labelled:
        split[:] = "unlabelled"
        types[:] = "Unknown"
    adata = ad.AnnData(
        X=sp.csr_matrix(
            np.log1p(counts / counts.sum(axis=1, keepdims=True) * 1e4), dtype=np.float32
        ),
        obs=pd.DataFrame(
            {"cell_type": types, "batch": batch, constants.SPLIT: split},
            index=[f"c{i}" for i in range(n_cells)],
        ).astype("category"),
        var=pd.DataFrame(
            {"highly_variable": np.arange(n_genes) < n_genes - 5},
            index=[f"G{j}" for j in range(n_genes)],
        ),
        layers={constants.COUNTS_LAYER: sp.csr_matrix(counts)},
    )
    adata.uns[constants.PREPARE_UNS] = {
        "class_key": "cell_type",
        "batch_key": "batch",
        "unlabeled_category": "Unknown",
        "target_sum": 1e4,
    }
    return adata


def _train(adata, checkpoint_dir=None, resume=False, callbacks=(), **changes):
    network_options = {
        **TINY_NETWORK,
        **{k: v for k, v in changes.items() if k in NetworkConfig.__dataclass_fields__},
    }
    settings = TrainingSettings(
        **{
            **TINY_TRAINING,
            **{k: v for k, v in changes.items() if k in TrainingSettings.__dataclass_fields__},
        }
    )
    data = TrainingData.from_anndata(
        adata, with_counts=network_options.get("reconstruction") == "nb"
    )
    config = NetworkConfig(
        n_genes=len(data.genes),
        n_classes=len(data.classes),
        n_batches=len(data.batches),
        batch_head=settings.dann_weight > 0,
        **network_options,
    )
    return train_network(
        data, config, settings, checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks
    )


def _weights(network) -> list[np.ndarray]:
    return [variable.numpy() for variable in network.variables]


def test_phases_follow_the_switches():
    config = NetworkConfig(n_genes=5, n_classes=2, n_batches=2)
    names = [phase.name for phase in plan_phases(TrainingSettings(), config, has_labels=True)]
    assert names == ["warmup", "full", "finetune"]
    no_classifier = NetworkConfig(n_genes=5, n_classes=2, n_batches=2, use_classifier=False)
    assert [
        phase.name for phase in plan_phases(TrainingSettings(), no_classifier, has_labels=True)
    ] == ["warmup", "full"]
    full = plan_phases(TrainingSettings(), config, has_labels=True)[1]
    assert full.permute and full.terms == ("reconstruction", "classifier", "alignment")  # no batch head by default
    with_head = NetworkConfig(n_genes=5, n_classes=2, n_batches=2, batch_head=True)
    warmup, full, finetune = plan_phases(TrainingSettings(dann_weight=0.5), with_head, has_labels=True)
    assert warmup.terms == ("reconstruction", "adversary") and finetune.terms == ("classifier",)
    assert full.permute and full.terms == ("reconstruction", "classifier", "alignment", "adversary")
    full = plan_phases(TrainingSettings(use_permutation=False, align_weight=0.0), config, has_labels=True)[1]
    assert not full.permute and full.terms == ("reconstruction", "classifier")


def test_early_stopping_can_end_every_phase_that_trains_the_classifier():
    config = NetworkConfig(n_genes=5, n_classes=2, n_batches=2)
    settings = TrainingSettings(epochs_full=40, epochs_finetune=10, min_epochs=30, patience=8)
    warmup, full, finetune = plan_phases(settings, config, has_labels=True)
    assert (full.min_epochs, finetune.min_epochs) == (30, 2)  # 10 - patience: the short phase can stop
    assert warmup.min_epochs == 0


@pytest.mark.parametrize(
    ("changes", "absent_loss"),
    [
        ({"dann_weight": 0.0}, "adversary_loss"),
        ({"use_classifier": False}, "classifier_loss"),
        ({"rec_weight": 0.0}, "reconstruction_loss"),
        ({"use_permutation": False}, None),
    ],
)
def test_each_module_can_be_switched_off(changes, absent_loss):
    run = _train(make_prepared(), **changes)
    columns = set(pd.DataFrame(run.history).columns)
    assert absent_loss not in columns
    assert {"reconstruction_loss", "classifier_loss", "adversary_loss"} - {absent_loss} <= columns
    assert all(np.isfinite(row["loss"]) for row in run.history)
    expect_permutation = changes.get("use_permutation", True) and changes.get("rec_weight", 1.0) > 0
    assert any(phase.permute for phase in run.phases) == expect_permutation


def test_negative_binomial_reconstruction_trains():
    run = _train(make_prepared(), reconstruction="nb", epochs_finetune=0)
    assert all(
        np.isfinite(row["reconstruction_loss"]) and row["reconstruction_loss"] > 0
        for row in run.history
    )


@pytest.mark.parametrize("alignment", ["kernel", "memory"])
def test_alignment_judges_the_latent_without_dropout_noise(alignment):
    from scpermut.model.network import ScpermutNetwork
    from scpermut.model.train.plan import Phase
    from scpermut.model.train.trainer import PhaseTrainer

    config = NetworkConfig(n_genes=12, n_classes=3, n_batches=2, hidden_layers=(16,), latent_dim=4, dropout=0.5)
    network = ScpermutNetwork(config).build_for_inputs()
    settings = TrainingSettings(alignment=alignment)
    trainer = PhaseTrainer(network, Phase("full", 1, ("classifier", "alignment")), settings, np.ones(3, np.float32))
    rng = np.random.default_rng(5)
    types, batches = np.arange(24) % 3, np.arange(24) // 12
    batch = {
        "x": rng.random((24, 12), dtype=np.float32),
        "classes": np.eye(3, dtype=np.float32)[types],
        "batches": np.eye(2, dtype=np.float32)[batches],
        "aligned_types": types,
        "batch_codes": batches,
        "condition_codes": np.zeros(24, np.int64),
        "conditions": np.ones((24, 1), np.float32),
    }
    if trainer.memory is not None:
        trainer.memory.remember(network.latent_without_dropout(batch["x"]) + 1.0, types, batches, batch["condition_codes"])
    # Two dropout draws: the classifier sees the noise, the alignment does not.
    first, second = (trainer.loss_terms(batch, network(batch["x"], training=True)) for _ in range(2))
    assert float(first["classifier"]) != float(second["classifier"])
    assert float(first["alignment"]) == float(second["alignment"]) > 0


def test_novel_cells_join_no_alignment_group_and_conditions_split_the_groups():
    from scpermut.model.network import ScpermutNetwork
    from scpermut.model.train.plan import Phase
    from scpermut.model.train.trainer import PhaseTrainer
    from scpermut.model.training_data import NOVEL

    config = NetworkConfig(n_genes=6, n_classes=2, n_batches=2, hidden_layers=(8,), latent_dim=2)
    trainer = PhaseTrainer(ScpermutNetwork(config).build_for_inputs(), Phase("full", 1, ("classifier", "alignment")), TrainingSettings(), np.ones(2, np.float32))
    sure = np.array([[0.95, 0.05]] * 4, np.float32)
    batch = {
        "classes": np.array([[0, 1], [0, 0], [0, 0], [0, 0]], np.float32),
        "aligned_types": np.array([1, 0, NOVEL, 0]),
        "conditions": np.array([[1, 0], [1, 0], [0, 1], [0, 1]], np.float32),
    }
    memberships = np.asarray(trainer.memberships(batch, {"class_probabilities": sure}))
    # (type, condition) columns: the labelled cell, two sure pseudo-labels, the novel cell in none.
    np.testing.assert_array_equal(memberships, [[0, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])


def test_no_batch_head_is_built_when_its_weight_is_zero():
    run = _train(make_prepared(), dann_weight=0.0)
    assert run.network.adversary is None and not run.config.batch_head
    assert "adversary_loss" not in pd.DataFrame(run.history).columns


def test_single_batch_turns_the_adversary_off_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        run = _train(make_prepared(batches=("only",)))
    assert "only one batch" in caplog.text
    assert run.network.adversary is None
    assert "adversary_loss" not in pd.DataFrame(run.history).columns


def test_classifier_without_labels_stops_clearly_and_runs_with_no_classifier():
    with pytest.raises(InputError, match="no labelled training cell.*`use_classifier=False`"):
        _train(make_prepared(labelled=False))
    assert _train(make_prepared(labelled=False), use_classifier=False).network.classifier is None


def test_early_stopping_restores_the_best_validation_weights():
    adata = make_prepared()
    model = Model(
        **TINY_NETWORK,
        **{**TINY_TRAINING, "epochs_full": 6, "epochs_finetune": 4, "patience": 1, "min_epochs": 0},
    ).fit(adata)
    history = model.record.history
    final = model.record.run["validation"]["balanced_accuracy"]
    scored = history["val_balanced_accuracy"].dropna()
    assert final == pytest.approx(scored.max())
    assert (
        model.record.run["epochs_run"]["full"] < 6 or model.record.run["epochs_run"]["finetune"] < 4
    )


def test_early_stopping_never_stops_before_min_epochs_nor_the_last_patience_epochs():
    model = Model(
        **TINY_NETWORK,
        **{**TINY_TRAINING, "epochs_full": 8, "epochs_finetune": 3, "patience": 1, "min_epochs": 5},
    ).fit(make_prepared())
    planned = model.record.run["epochs_planned"]
    assert planned["full"]["min_epochs"] == 5 and planned["finetune"]["min_epochs"] == 2  # 3 - patience
    assert model.record.run["epochs_run"]["full"] >= 5
    assert model.record.run["epochs_run"]["finetune"] >= 2


class _Scores:
    def __init__(self, values):
        self.values = list(values)

    def scores(self):
        return {"balanced_accuracy": self.values.pop(0)}


class _Weights:
    def __init__(self):
        import keras

        self.variables = [keras.Variable(0.0)]


def test_a_tie_keeps_the_later_weights_without_resetting_patience():
    from scpermut.model.train.callbacks import EarlyStopping

    network = _Weights()
    stopper = EarlyStopping(network, _Scores([0.2]), "balanced_accuracy", 2, None, None, 0)
    stopper.set_model(type("Trainer", (), {"stop_training": False})())
    stopper.on_train_begin()
    for epoch, score in enumerate([0.5, 0.5, 0.4]):
        network.variables[0].assign(float(epoch + 1))
        stopper.on_epoch_end(epoch, {"val_balanced_accuracy": score})
    assert stopper.state["best_epoch"] == 1 and float(stopper.best_values[0]) == 2.0
    assert stopper.state["stopped"]  # the tie and the drop used up the patience of 2


def test_too_few_validation_cells_train_too_and_the_schedule_runs_in_full(caplog):
    adata = make_prepared()  # 8 validation cells per type
    with caplog.at_level(logging.WARNING):
        model = Model(
            **TINY_NETWORK, **{**TINY_TRAINING, "patience": 1, "min_epochs": 0, "min_validation_per_class": 9}
        ).fit(adata)
    assert "fewer than 9 validation cells" in caplog.text
    run = model.record.run
    assert run["validation_joined_training"] and run["n_validation"] == 0
    assert run["n_labelled_train"] == int(adata.obs[constants.SPLIT].isin(["train", "validation"]).sum())
    assert run["epochs_run"]["full"] == TINY_TRAINING["epochs_full"]
    assert "val_balanced_accuracy" not in model.record.history.columns
    enough = Model(**TINY_NETWORK, **{**TINY_TRAINING, "min_validation_per_class": 8}).fit(adata)
    assert not enough.record.run["validation_joined_training"]


@pytest.mark.parametrize(
    "changes",
    [
        {"adversary_objective": "confusion", "align_weight": 0.0},
        {"adversary_steps": 3, "align_weight": 0.0},
        {"conditional_decoder": True, "align_weight": 0.0},
        {"align_weight": 1.0, "pseudo_label_threshold": 0.5, "align_spreads": True},
    ],
)
def test_batch_mixing_options_train(changes):
    run = _train(make_prepared(), **changes)
    history = pd.DataFrame(run.history)
    assert np.isfinite(history["loss"]).all()
    if changes["align_weight"] > 0:
        aligned = history.query("phase == 'full'")["alignment_loss"]
        assert aligned.notna().all() and (aligned >= 0).all()
        # Only the phase that trains the classifier and the encoder aligns.
        assert history.query("phase != 'full'")["alignment_loss"].isna().all()
    else:
        assert "alignment_loss" not in history.columns


def test_confusion_and_extra_adversary_steps_change_training_but_not_its_determinism():
    base = _weights(_train(make_prepared()).network)
    for changes in ({"adversary_objective": "confusion"}, {"adversary_steps": 2}):
        first = _weights(_train(make_prepared(), **changes).network)
        again = _weights(_train(make_prepared(), **changes).network)
        assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
        assert not all(np.array_equal(a, b) for a, b in zip(first, base, strict=True))


class _Interrupt(Exception):
    pass


def _interrupt_after(epochs: int):
    """A callback that simulates a killed job: raises after ``epochs`` epochs, once the checkpoint is written."""
    import keras  # after scpermut.model, which keeps TensorFlow's oneDNN kernels off for bit-identical runs

    class InterruptAfter(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.remaining = epochs

        def on_epoch_end(self, epoch, logs=None):
            self.remaining -= 1
            if self.remaining == 0:
                raise _Interrupt

    return InterruptAfter()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A tiny training run straight through, checkpointing as it goes."""
    return _train(
        make_prepared(), checkpoint_dir=tmp_path_factory.mktemp("straight") / "checkpoint"
    )


@pytest.mark.parametrize("interrupt_after", [2, 4])  # inside the full phase / at its last epoch
def test_resume_after_an_interrupt_gives_the_same_model(tmp_path, uninterrupted, interrupt_after):
    adata = make_prepared()
    with pytest.raises(_Interrupt):
        _train(
            adata, checkpoint_dir=tmp_path / "killed", callbacks=[_interrupt_after(interrupt_after)]
        )
    resumed = _train(adata, checkpoint_dir=tmp_path / "killed", resume=True)
    assert resumed.resumed_from == {"phase": "full", "epoch": interrupt_after - 1}
    assert resumed.history == uninterrupted.history
    for expected, actual in zip(
        _weights(uninterrupted.network), _weights(resumed.network), strict=True
    ):
        np.testing.assert_array_equal(actual, expected)


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    adata = make_prepared()
    with pytest.raises(_Interrupt):
        _train(adata, checkpoint_dir=tmp_path / "ckpt", callbacks=[_interrupt_after(1)])
    with pytest.raises(InputError, match="other data or settings"):
        _train(adata, checkpoint_dir=tmp_path / "ckpt", resume=True, learning_rate=0.01)


def test_model_folder_is_complete_refuses_overwrite_and_reloads(tmp_path):
    prepared = tmp_path / "prepared.h5ad"
    make_prepared().write_h5ad(prepared)
    model_dir = tmp_path / "model"
    train_file(prepared, model_dir, device="cpu", **TINY_NETWORK, **TINY_TRAINING)
    assert sorted(path.name for path in model_dir.iterdir()) == sorted([*constants.MODEL_FILES, constants.MODEL_NOVELTY, constants.MODEL_RECONSTRUCTION_NOVELTY, constants.MODEL_REFERENCE_SAMPLE])
    run = json.loads((model_dir / constants.MODEL_RUN).read_text())
    assert run["seed"] == 0 and run["device"] == "cpu" and len(run["input"]["sha256"]) == 64
    assert {"tensorflow", "keras", "scpermut"} <= set(run["versions"])
    with pytest.raises(InputError, match="already exists.*`overwrite`"):
        train_file(prepared, model_dir, device="cpu", **TINY_NETWORK, **TINY_TRAINING)
    loaded = Model.load(model_dir)
    assert loaded.genes == [f"G{j}" for j in range(25)]
    assert loaded.classes == ["alpha", "beta", "gamma"]


def test_unfinished_checkpoint_needs_resume_or_overwrite(tmp_path):
    (tmp_path / "model" / constants.CHECKPOINT_FOLDER).mkdir(parents=True)
    with pytest.raises(InputError, match="`resume`"):
        persistence.check_model_dir_free(tmp_path / "model", overwrite=False, resume=False)
    persistence.check_model_dir_free(tmp_path / "model", overwrite=False, resume=True)


def _h5_arrays(path: Path) -> dict[str, np.ndarray]:
    arrays = {}
    with h5py.File(path) as handle:
        handle.visititems(
            lambda name, item: (
                arrays.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
            )
        )
    return arrays


def test_same_seed_is_bit_identical_across_processes_and_seeds_differ(tmp_path, prepared_path):
    tiny = {
        "hidden_layers": (32,),
        "latent_dim": 8,
        "batch_size": 256,
        "epochs_warmup": 1,
        "epochs_full": 2,
        "epochs_finetune": 1,
    }
    flags = [
        f"--{name}={','.join(map(str, value)) if isinstance(value, tuple) else value}"
        for name, value in tiny.items()
    ]
    for name in ("first", "second"):
        subprocess.run(
            [
                SCPERMUT,
                "-q",
                "train",
                str(prepared_path),
                "--out",
                str(tmp_path / name),
                "--seed=0",
                "--device=cpu",
                *flags,
            ],
            check=True,
            capture_output=True,
            # Not this suite's TF_ENABLE_ONEDNN_OPTS=0 (conftest.py): only scpermut's own switch.
            env=package_only_environment(),
        )
    train_file(prepared_path, tmp_path / "other", device="cpu", seed=1, **tiny)
    first, second, other = (
        _h5_arrays(tmp_path / name / constants.MODEL_WEIGHTS) for name in ("first", "second", "other")
    )
    assert first.keys() == second.keys() == other.keys() and len(first) > 10
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
    assert any(not np.array_equal(first[key], other[key]) for key in first)
    assert (tmp_path / "first" / constants.MODEL_HISTORY).read_text() == (
        tmp_path / "second" / constants.MODEL_HISTORY
    ).read_text()
    # The children ran with the package's own oneDNN switch, not one inherited from the tests.
    for name in ("first", "second"):
        run = json.loads((tmp_path / name / constants.MODEL_RUN).read_text())
        assert run["tf_enable_onednn_opts"] == "0", name
    adata = ad.read_h5ad(prepared_path)
    expression = adata[:, adata.var["highly_variable"].to_numpy()].X
    outputs = [
        Model.load(tmp_path / name).transform(expression) for name in ("first", "second", "other")
    ]
    for key in ("latent", "class_probabilities"):
        np.testing.assert_array_equal(outputs[0][key], outputs[1][key])
        assert not np.array_equal(outputs[0][key], outputs[2][key])


def test_train_command_resumes_a_killed_run(tmp_path):
    prepared = tmp_path / "prepared.h5ad"
    make_prepared().write_h5ad(prepared)
    model_dir = tmp_path / "model"
    with pytest.raises(_Interrupt):
        Model(**TINY_NETWORK, **TINY_TRAINING).fit(
            ad.read_h5ad(prepared),
            checkpoint_dir=model_dir / constants.CHECKPOINT_FOLDER,
            callbacks=[_interrupt_after(2)],
        )
    flags = [
        "--hidden_layers=16",
        "--latent_dim=4",
        *(f"--{key}={value}" for key, value in TINY_TRAINING.items()),
    ]
    refused = CliRunner().invoke(main, ["train", str(prepared), "--out", str(model_dir), *flags])
    assert refused.exit_code == 1
    result = CliRunner().invoke(
        main, ["train", str(prepared), "--out", str(model_dir), "--resume", *flags]
    )
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in model_dir.iterdir()) == sorted([*constants.MODEL_FILES, constants.MODEL_NOVELTY, constants.MODEL_RECONSTRUCTION_NOVELTY, constants.MODEL_REFERENCE_SAMPLE])
    assert json.loads((model_dir / constants.MODEL_RUN).read_text())["resumed_from"] == {
        "phase": "full",
        "epoch": 1,
    }


def test_asking_for_a_missing_gpu_stops_clearly():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("this machine has a GPU")
    with pytest.raises(InputError, match="`device=gpu`: TensorFlow sees no GPU"):
        select_device("gpu", mixed_precision=False)


def test_fit_records_the_calibration_and_transform_applies_its_temperature():
    adata = make_prepared()
    model = Model(**TINY_NETWORK, **TINY_TRAINING).fit(adata)
    record = model.record.run["calibration"]
    assert {"temperature", "ece_before", "ece_after", "n_cells"} <= set(record)
    assert record["n_cells"] == model.record.run["n_validation"]
    assert record["nll_after"] <= record["nll_before"] + 1e-9
    calibrated = model.transform(adata[:, model.genes].X)["class_probabilities"]
    raw = model.network(adata[:, model.genes].X.toarray(), training=False)["class_probabilities"]
    np.testing.assert_array_equal(calibrated.argmax(axis=1), raw.numpy().argmax(axis=1))
    off = Model(**TINY_NETWORK, **TINY_TRAINING, calibrate=False).fit(adata)
    assert "calibration" not in off.record.run and off.temperature == 1.0


def test_an_epoch_budget_feeds_that_many_cells_per_epoch_and_is_recorded():
    import keras

    steps: list[int] = []
    counter = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: steps.append(0),
        on_train_batch_end=lambda batch, logs: steps.__setitem__(-1, steps[-1] + 1),
    )
    adata = make_prepared()  # 120 cells, 72 of them labelled training cells
    model = Model(**TINY_NETWORK, **TINY_TRAINING, epoch_cells=50).fit(adata, callbacks=[counter])
    planned = model.record.run["epochs_planned"]
    assert planned["full"] == {"epochs": 3, "min_epochs": 0, "cells_per_epoch": 50}
    assert planned["finetune"]["cells_per_epoch"] == 50
    assert set(steps) == {2}  # 50 cells in mini-batches of 32, in every phase
    whole = Model(**TINY_NETWORK, **TINY_TRAINING).fit(adata).record.run["epochs_planned"]
    assert whole["warmup"]["cells_per_epoch"] == 120 and whole["finetune"]["cells_per_epoch"] == 72


def test_early_stopping_scores_a_type_stratified_sample_of_an_atlas_validation_cells(monkeypatch):
    from scpermut.model.train import callbacks

    codes = np.full(10_000, -1)
    codes[:6000] = 0
    codes[6000:6300] = 1  # a rare type
    codes[9000:] = 2
    assert callbacks.scored_validation_cells(codes, seed=0).size == 7300  # under the cap: all of them
    monkeypatch.setattr(callbacks, "MAX_SCORED_VALIDATION_CELLS", 730)
    monkeypatch.setattr(callbacks, "MIN_SCORED_PER_TYPE", 50)
    scored = callbacks.scored_validation_cells(codes, seed=0)
    assert (np.diff(scored) > 0).all() and (codes[scored] >= 0).all()
    np.testing.assert_array_equal(np.bincount(codes[scored]), [600, 50, 100])
    np.testing.assert_array_equal(scored, callbacks.scored_validation_cells(codes, seed=0))
    assert not np.array_equal(scored, callbacks.scored_validation_cells(codes, seed=1))
