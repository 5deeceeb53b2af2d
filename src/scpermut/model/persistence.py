"""The model folder (everything needed to predict, nothing from the training data) and training checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from scpermut import _atomic, constants
from scpermut.errors import InputError

log = logging.getLogger(__name__)


@dataclass
class ModelRecord:
    """The non-weight contents of a model folder."""

    network: dict
    training: dict
    genes: list[str]
    classes: list[str]
    batches: list[str]
    preprocess: dict
    run: dict = field(default_factory=dict)
    history: pd.DataFrame = field(default_factory=pd.DataFrame)
    # The novelty model's arrays (:class:`scpermut.model.novelty.NoveltyModel`); empty for a
    # model without a classifier or from a version before novelty.
    novelty: dict = field(default_factory=dict)
    # The reconstruction novelty's arrays (:class:`scpermut.model.novelty.ReconstructionNovelty`);
    # empty in older folders: cells of new batches are then scored by the latent novelty alone.
    reconstruction: dict = field(default_factory=dict)
    # The reference latent sample (``latent``, ``classes``, ``batches`` codes); empty in older folders.
    reference: dict[str, np.ndarray] = field(default_factory=dict)


def check_model_dir_free(model_dir: Path, overwrite: bool, resume: bool) -> None:
    """Refuse to train into a folder that already holds a model or unrelated files.

    A folder holding only a checkpoint is accepted with ``resume``; ``overwrite`` accepts anything.
    """
    if overwrite or not model_dir.exists():
        return
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: exists and is not a folder; choose another --out.")
    content = {path.name for path in model_dir.iterdir()}
    if not content or (resume and content == {constants.CHECKPOINT_FOLDER}):
        return
    if constants.CHECKPOINT_FOLDER in content:
        raise InputError(
            f"{model_dir}: holds the checkpoint of an unfinished training; pass `resume` to continue it or `overwrite` to start again."
        )
    raise InputError(
        f"{model_dir}: already exists and is not empty; pass `overwrite` to replace it."
    )


def save_model(model_dir: Path, network, record: ModelRecord) -> None:
    """Write the model folder atomically: every file appears at once, or none does.

    Replaces the folder (and any checkpoint in it) in one rename.
    """
    with _atomic.atomic_path(model_dir) as tmp:
        tmp.mkdir(parents=True)
        network.save_weights(tmp / constants.MODEL_WEIGHTS)
        (tmp / constants.MODEL_CONFIG).write_text(
            json.dumps({"network": record.network, "training": record.training}, indent=2) + "\n"
        )
        (tmp / constants.MODEL_GENES).write_text("".join(f"{gene}\n" for gene in record.genes))
        (tmp / constants.MODEL_CLASSES).write_text(json.dumps(record.classes, indent=2) + "\n")
        (tmp / constants.MODEL_BATCHES).write_text(json.dumps(record.batches, indent=2) + "\n")
        (tmp / constants.MODEL_PREPROCESS).write_text(
            json.dumps(record.preprocess, indent=2, sort_keys=True) + "\n"
        )
        (tmp / constants.MODEL_RUN).write_text(json.dumps(record.run, indent=2, sort_keys=True, default=str) + "\n")
        record.history.to_csv(tmp / constants.MODEL_HISTORY, index=False)
        if record.novelty:
            np.savez(tmp / constants.MODEL_NOVELTY, **record.novelty)
        if record.reconstruction:
            np.savez(tmp / constants.MODEL_RECONSTRUCTION_NOVELTY, **record.reconstruction)
        if record.reference:
            np.savez(tmp / constants.MODEL_REFERENCE_SAMPLE, **record.reference)


def read_model_record(model_dir: str | Path, complete: bool = True) -> ModelRecord:
    """Read everything but the weights from a model folder: the one reader of its records.

    With ``complete`` (for loading a model) every file must be present and consistent; without
    it (for reports on a partial folder) an absent or empty record comes back empty.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise InputError(f"{model_dir}: model folder not found; train one with `scpermut train`.")
    missing = [name for name in constants.MODEL_FILES if not (model_dir / name).is_file()]
    if missing and complete:
        raise InputError(
            f"{model_dir}: not a complete scpermut model folder (missing {', '.join(missing)})."
        )

    def read(name, parse, empty):
        path = model_dir / name
        return parse(path) if path.is_file() and path.stat().st_size else empty

    config = read(constants.MODEL_CONFIG, lambda path: json.loads(path.read_text()), {})
    record = ModelRecord(
        network=config.get("network", {}),
        training=config.get("training", {}),
        genes=read(constants.MODEL_GENES, lambda path: path.read_text().splitlines(), []),
        classes=read(constants.MODEL_CLASSES, lambda path: json.loads(path.read_text()), []),
        batches=read(constants.MODEL_BATCHES, lambda path: json.loads(path.read_text()), []),
        preprocess=read(constants.MODEL_PREPROCESS, lambda path: json.loads(path.read_text()), {}),
        run=read(constants.MODEL_RUN, lambda path: json.loads(path.read_text()), {}),
        history=read(constants.MODEL_HISTORY, pd.read_csv, pd.DataFrame()),
        novelty=read(constants.MODEL_NOVELTY, _read_arrays, {}),
        reconstruction=read(constants.MODEL_RECONSTRUCTION_NOVELTY, _read_arrays, {}),
        reference=read(constants.MODEL_REFERENCE_SAMPLE, _read_arrays, {}),
    )
    if not complete:
        return record
    expected = {
        "genes": (record.genes, "n_genes"),
        "classes": (record.classes, "n_classes"),
        "batches": (record.batches, "n_batches"),
    }
    for name, (values, key) in expected.items():
        if len(values) != record.network[key]:
            raise InputError(
                f"{model_dir}: lists {len(values)} {name} but the network was built for {record.network[key]}."
            )
    if len(set(record.genes)) != len(record.genes):
        raise InputError(f"{model_dir / constants.MODEL_GENES}: gene names are not unique.")
    return record


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as stored:
        return {name: stored[name] for name in stored.files}


def write_checkpoint(folder: Path, state: dict, arrays: dict[str, list[np.ndarray]]) -> None:
    """Atomically replace the checkpoint ``folder`` with ``state`` (JSON) and named lists of arrays."""
    with _atomic.atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        state = {**state, "arrays": {name: len(values) for name, values in arrays.items()}}
        flat = {
            f"{name}_{index}": value
            for name, values in arrays.items()
            for index, value in enumerate(values)
        }
        np.savez(tmp / constants.CHECKPOINT_ARRAYS, **flat)
        (tmp / constants.CHECKPOINT_STATE).write_text(json.dumps(state, indent=2, default=str) + "\n")


def read_checkpoint(folder: Path) -> tuple[dict, dict[str, list[np.ndarray]]] | None:
    """Read a checkpoint written by :func:`write_checkpoint`, or None when there is none."""
    if not (folder / constants.CHECKPOINT_STATE).is_file():
        return None
    state = json.loads((folder / constants.CHECKPOINT_STATE).read_text())
    with np.load(folder / constants.CHECKPOINT_ARRAYS) as stored:
        arrays = {
            name: [stored[f"{name}_{index}"] for index in range(count)]
            for name, count in state["arrays"].items()
        }
    return state, arrays


def remove_checkpoint(folder: Path) -> None:
    """Delete a stale checkpoint (training starts over)."""
    if folder.exists():
        log.info("removing the previous checkpoint %s", folder)
        shutil.rmtree(folder)
