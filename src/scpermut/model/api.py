"""``scpermut.Model``: fit / predict / save / load on AnnData, for notebooks and for the CLI."""

from __future__ import annotations

import dataclasses
import logging
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from scpermut import constants
from scpermut._version import __version__
from scpermut.errors import InputError
from scpermut.model import adapt, calibration, persistence
from scpermut.model.minibatches import infer
from scpermut.model.network import ScpermutNetwork
from scpermut.model.settings import NetworkConfig, TrainingSettings
from scpermut.model.novelty import NoveltyModel, ReconstructionNovelty
from scpermut.model.train import (
    describe_device,
    novelty_model,
    platform_record,
    predict_classes,
    reconstruction_novelty,
    train_network,
    validation_scores,
)
from scpermut.model.training_data import NOT_LABELLED, TrainingData

log = logging.getLogger(__name__)

# Set from the data (shape, seed) or from the training settings (a batch head when dann_weight > 0).
_DATA_SHAPE_FIELDS = ("n_genes", "n_classes", "n_batches", "seed", "batch_head")
NETWORK_OPTIONS = tuple(
    f.name for f in dataclasses.fields(NetworkConfig) if f.name not in _DATA_SHAPE_FIELDS
)
TRAINING_OPTIONS = tuple(f.name for f in dataclasses.fields(TrainingSettings))


def software_versions() -> dict[str, str]:
    """Versions of Python and the libraries that shape results."""
    from importlib.metadata import PackageNotFoundError, version

    import tensorflow as tf

    versions = {
        "scpermut": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "tensorflow": tf.__version__,
    }
    for package in ("keras", "numpy", "scipy", "anndata", "scanpy", "scikit-learn", "umap-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            continue
    return versions


class Model:
    """Permutation autoencoder + focal-loss classifier + class-batch alignment on one latent space.

    Labelled cells reconstruct another cell of their type, a focal-loss classifier reads the
    latent, and the alignment pulls each type's cells in every batch onto that type's cells over
    all batches; ``dann_weight`` > 0 adds a batch head behind gradient reversal.

    Parameters
    ----------
    **options
        Network options (``hidden_layers``, ``latent_dim``, ``dropout``, ``batch_norm``,
        ``activation``, ``latent_activation``, ``classifier_layers``, ``adversary_layers``,
        ``reconstruction``, ``use_classifier``, ``grl_lambda``...) and training options (see
        :class:`~scpermut.model.settings.TrainingSettings`, including ``seed`` and the loss weights).

    Examples
    --------
    >>> model = scpermut.Model(seed=1).fit(prepared)          # doctest: +SKIP
    >>> model.predict(query)                                   # doctest: +SKIP
    >>> model.save("model/"); scpermut.Model.load("model/")    # doctest: +SKIP
    """

    def __init__(self, **options):
        unknown = set(options) - set(NETWORK_OPTIONS) - set(TRAINING_OPTIONS)
        if unknown:
            raise TypeError(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.network_options = {name: options[name] for name in NETWORK_OPTIONS if name in options}
        self.settings = TrainingSettings(
            **{name: options[name] for name in TRAINING_OPTIONS if name in options}
        )
        self.network: ScpermutNetwork | None = None
        self.record: persistence.ModelRecord | None = None

    # -- training ---------------------------------------------------------------------------

    def fit(
        self,
        adata,
        *,
        checkpoint_dir: Path | None = None,
        resume: bool = False,
        callbacks=(),
        source: str = "AnnData",
    ) -> Model:
        """Train on an AnnData written by ``scpermut prepare`` (its highly variable genes).

        Parameters
        ----------
        adata
            Prepared AnnData (log-normalised ``X``, ``var["highly_variable"]``,
            ``obs["scpermut_split"]``, ``uns["scpermut_prepare"]``), or the
            :class:`~scpermut.model.training_data.TrainingData` of one, e.g.
            ``TrainingData.from_file("prepared.h5ad")`` to train with the matrix left on disk.
        checkpoint_dir
            Folder for per-epoch checkpoints; None for none.
        resume
            Continue from the checkpoint in ``checkpoint_dir``.
        callbacks
            Extra Keras callbacks for every phase.
        source
            Name of the data in error messages (e.g. its file).

        Returns
        -------
        self, trained.
        """
        started = time.time()
        nb = self.network_options.get("reconstruction", "mse") == "nb"
        data = adata if isinstance(adata, TrainingData) else TrainingData.from_anndata(adata, source=source, with_counts=nb)
        if data.stored and self.settings.labelled_share > 0:
            raise InputError(f"{source}: --labelled_share needs the data in memory (--data_access memory).")
        if nb and data.counts is None:
            raise InputError(f"{source}: the negative-binomial loss needs the raw counts (TrainingData.from_file(path, with_counts=True)).")
        config = NetworkConfig(
            n_genes=len(data.genes),
            n_classes=len(data.classes),
            n_batches=len(data.batches),
            seed=self.settings.seed,
            batch_head=self.settings.dann_weight > 0,
            **self.network_options,
        )
        log.info(
            "training on %d cells x %d genes, %d cell types, %d batches",
            data.n_cells,
            len(data.genes),
            len(data.classes),
            len(data.batches),
        )
        run = train_network(
            data,
            config,
            self.settings,
            checkpoint_dir=checkpoint_dir,
            resume=resume,
            callbacks=callbacks,
        )
        self.network = run.network
        fingerprint = data.fingerprint()
        data = run.data  # validation cells may have joined training (too few to stop early on)
        run_record = self._run_record(run, data, source, fingerprint, started)
        novelty, reconstruction = {}, {}
        if run.config.use_classifier:
            scores, novelty, reconstruction = self._calibrate(data)
            run_record.update(scores)
        self.record = persistence.ModelRecord(
            network=run.config.to_dict(),
            training=self.settings.to_dict(),
            genes=data.genes,
            classes=data.classes,
            batches=data.batches,
            preprocess=data.preprocess,
            run=run_record,
            history=pd.DataFrame(run.history),
            novelty=novelty,
            reconstruction=reconstruction,
            reference=adapt.reference_sample(self.network, data, self.settings.seed, self.settings.batch_size * 4),
        )
        return self

    def _run_record(self, run, data: TrainingData, source: str, fingerprint: str, started: float) -> dict:
        """What ``run.json`` records of a training run: seed, versions, parameters, device, the
        input's fingerprint, the cells, the phases and loss terms, epochs planned and run, timing."""
        return {
            "seed": self.settings.seed,
            "versions": software_versions(),
            "parameters": {"network": run.config.to_dict(), "training": self.settings.to_dict()},
            "device": describe_device(),
            "tf_enable_onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", ""),
            "platform": platform_record(),
            "input": {"name": source, "fingerprint": fingerprint},
            "n_cells": data.n_cells,
            "n_genes": len(data.genes),
            "n_labelled_train": int((data.train_codes != NOT_LABELLED).sum()),
            "n_validation": int((data.validation_codes != NOT_LABELLED).sum()),
            "validation_joined_training": run.validation_joined_training,
            "batch_head": run.config.batch_head,
            "phases": [phase.name for phase in run.phases],
            "loss_terms": sorted({term for phase in run.phases for term in phase.terms}),
            "epochs_planned": run.planned_epochs(),
            "epochs_run": run.phase_epochs(),
            "resumed_from": run.resumed_from or {},
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
            "duration_seconds": round(time.time() - started, 2),
        }

    def _calibrate(self, data: TrainingData) -> tuple[dict, dict, dict]:
        """Validation scores, the temperature and the novelty models (latent, reconstruction), for
        the run record and the folder.

        Temperature and novelty are fitted on the cells of the held-out calibration batch when
        there is one (labels the model never trained on, in a batch it never saw labelled, as a
        query's), else on the validation cells (which also chose the epoch).
        """
        batch_size = self.settings.batch_size * 4
        record = {}
        validation = np.flatnonzero(data.validation_codes != NOT_LABELLED)
        calibration_cells = np.flatnonzero(data.calibration_codes != NOT_LABELLED)
        held_out, codes, source = calibration_cells, data.calibration_codes, "the calibration batch"
        if held_out.size == 0:
            held_out, codes, source = validation, data.validation_codes, "the validation cells"
        outputs = infer(self.network, data.expression, batch_size, rows=held_out) if held_out.size else None
        if validation.size:
            predicted = predict_classes(self.network, data.expression, batch_size, rows=validation)
            record["validation"] = validation_scores(data.validation_codes[validation], predicted.argmax(axis=1))
        if calibration_cells.size:
            record["calibration_scores"] = validation_scores(
                codes[held_out], outputs["class_probabilities"].argmax(axis=1)
            )
        if outputs is not None and self.settings.calibrate:
            record["calibration"] = {
                **calibration.calibrate(outputs["class_probabilities"], codes[held_out]),
                "method": f"temperature scaling on {source}",
                "batches": sorted({data.batches[code] for code in data.batch_codes[calibration_cells]}),
            }
        latent = outputs["latent"] if outputs is not None else np.zeros((0, self.network.network_config.latent_dim))
        novelty = novelty_model(self.network, data, latent, held_out, batch_size)
        record["novelty"] = {"fitted_on": source, "n_cells": int(held_out.size)}
        reconstruction = reconstruction_novelty(self.network, data, held_out, batch_size)
        if reconstruction is not None:
            record["reconstruction_novelty"] = {"fitted_on": source, "n_cells": int(held_out.size), "top_genes": reconstruction.top}
        return record, novelty.to_arrays(), {} if reconstruction is None else reconstruction.to_arrays()

    # -- inference --------------------------------------------------------------------------

    def _require_trained(self) -> None:
        if self.network is None:
            raise InputError("scpermut.Model: not trained yet; call fit() or Model.load() first.")

    @property
    def genes(self) -> list[str]:
        self._require_trained()
        return self.record.genes

    @property
    def classes(self) -> list[str]:
        self._require_trained()
        return self.record.classes

    @property
    def has_classifier(self) -> bool:
        self._require_trained()
        return self.network.classifier is not None

    def transform(
        self, expression: sp.spmatrix, batch_size: int | None = None, batches=None, reconstruction: bool = False
    ) -> dict:
        """Latent coordinates (and class probabilities) of log-normalised rows over :attr:`genes`.

        ``batches``: each row's batch name, to adapt the rows of batches the model never trained
        on (:mod:`scpermut.model.adapt`, the model unchanged); None maps every row frozen.
        ``reconstruction``: also score every row's reconstruction novelty (the decoder runs, one
        chunk at a time), when the model folder has one.

        Returns
        -------
        ``{"latent": (cells, latent_dim)}`` plus ``"class_probabilities"`` when the model has a
        classifier, ``"adaptation"`` (a summary per adapted batch) when rows were adapted, and
        ``"reconstruction_score"`` (per row, of the frozen encoder's latent;
        :meth:`reconstruction_novelty` makes it a novelty) when asked for and the model has it.
        """
        self._require_trained()
        scorer = None
        if reconstruction and self.record.reconstruction:
            scorer = ReconstructionNovelty.from_arrays(self.record.reconstruction)
        result = infer(
            self.network, expression, batch_size or self.settings.batch_size * 4, residuals=None if scorer is None else scorer.score
        )
        if scorer is not None:
            result["reconstruction_score"] = result.pop("residual_score")
        adapted = None if batches is None else adapt.adapt_new_batches(self.network, result["latent"], batches, self.record)
        if adapted is not None:
            result["latent"], result["class_probabilities"], result["adaptation"] = adapted
        if "class_probabilities" in result:
            result["class_probabilities"] = calibration.apply_temperature(
                result["class_probabilities"], self.temperature
            )
        return result

    @property
    def temperature(self) -> float:
        """Temperature fitted on the validation cells (1: none), applied to every probability."""
        self._require_trained()
        return float((self.record.run.get("calibration") or {}).get("temperature", 1.0))

    def novelty(self, latent: np.ndarray) -> np.ndarray | None:
        """Each cell's novelty (0 to 1, :mod:`scpermut.model.novelty`), before any neighbourhood
        average; None for a model without a novelty model (no classifier, or saved by a version
        before it)."""
        self._require_trained()
        if not self.record.novelty:
            return None
        return NoveltyModel.from_arrays(self.record.novelty).novelty(latent)

    def reconstruction_novelty(self, scores: np.ndarray, batch_codes: np.ndarray):
        """The novelty (0 to 1) of reconstruction scores (:meth:`transform`'s ``"reconstruction_score"``)
        per batch, and the codes of the batches judged against their own median
        (:meth:`~scpermut.model.novelty.ReconstructionNovelty.batch_novelty`); None for a model
        folder without a reconstruction novelty."""
        self._require_trained()
        if not self.record.reconstruction:
            return None
        return ReconstructionNovelty.from_arrays(self.record.reconstruction).batch_novelty(scores, batch_codes)

    def predict(self, adata, **options):
        """Annotate ``adata`` in place (or a copy with ``copy=True``); see :func:`scpermut.annotate`."""
        from scpermut.annotation import annotate

        self._require_trained()
        return annotate(adata, self, **options)

    # -- files ------------------------------------------------------------------------------

    def save(self, model_dir: str | Path, overwrite: bool = False) -> None:
        """Write the model folder (weights, config, genes, classes, batches, preprocessing, history, run record,
        reference latent sample)."""
        self._require_trained()
        model_dir = Path(model_dir)
        persistence.check_model_dir_free(model_dir, overwrite=overwrite, resume=False)
        persistence.save_model(model_dir, self.network, self.record)

    @classmethod
    def load(cls, model_dir: str | Path) -> Model:
        """Load a model folder written by :meth:`save`; needs no training data."""
        record = persistence.read_model_record(model_dir)
        network_options = {
            name: record.network[name] for name in NETWORK_OPTIONS if name in record.network
        }
        model = cls(**network_options, **record.training)
        model.network = ScpermutNetwork(NetworkConfig.from_dict(record.network)).build_for_inputs()
        try:
            model.network.load_weights(Path(model_dir) / constants.MODEL_WEIGHTS)
        except (ValueError, OSError) as error:
            raise InputError(
                f"{Path(model_dir) / constants.MODEL_WEIGHTS}: cannot be loaded into the network in config.json ({error})."
            ) from error
        model.record = record
        return model
