"""``scpermut train``: train on ``prepared.h5ad`` and write the model folder."""

from __future__ import annotations

import logging
from pathlib import Path

from scpermut import constants
from scpermut._atomic import file_sha256
from scpermut.data.io import read_training_cells
from scpermut.errors import InputError
from scpermut.model import persistence
from scpermut.model.api import Model
from scpermut.model.train import select_device
from scpermut.options import default

log = logging.getLogger(__name__)


def train_file(
    prepared_path: str | Path,
    model_dir: str | Path,
    *,
    device: str = "auto",
    mixed_precision: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    recorded_input: str | Path | None = None,
    callbacks=(),
    **options,
) -> Model:
    """``scpermut train``: train on a ``prepared.h5ad`` and write the model folder.

    Checkpoints go to ``MODEL_DIR/checkpoint/`` after every epoch; the finished folder replaces
    them in one rename. ``recorded_input`` is the input path the model folder records (default:
    ``prepared_path``; ``scpermut run`` names the published file). ``callbacks`` are extra Keras
    callbacks for every phase (experiment tracking).
    """
    prepared_path, model_dir = Path(prepared_path), Path(model_dir)
    persistence.check_model_dir_free(model_dir, overwrite=overwrite, resume=resume)
    if not prepared_path.is_file():
        raise InputError(f"{prepared_path}: file not found.")
    device_name = select_device(device, mixed_precision)
    log.info("training on %s", device_name)
    adata = read_training_cells(prepared_path, with_counts=options.get("reconstruction", "mse") == "nb")
    _check_batch_size(options.get("batch_size", default("batch_size")), adata.n_obs)
    checkpoint_dir = model_dir / constants.CHECKPOINT_FOLDER
    if not resume:
        persistence.remove_checkpoint(checkpoint_dir)
    model = Model(**options).fit(
        adata, checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, source=str(recorded_input or prepared_path)
    )
    model.record.run["device"] = device_name
    model.record.run["input"].update(
        file=str(Path(recorded_input or prepared_path).resolve()), sha256=file_sha256(prepared_path)
    )
    persistence.save_model(model_dir, model.network, model.record)
    return model


# Fewer optimiser steps per epoch than this train poorly in the epochs the phases allow.
_MIN_STEPS_PER_EPOCH = 10


def _check_batch_size(batch_size: int, n_cells: int) -> None:
    """Warn when an epoch is only a few optimiser steps (a mini-batch as large as the data trains badly)."""
    steps = -(-n_cells // batch_size)
    if steps >= _MIN_STEPS_PER_EPOCH:
        return
    better = max(2, n_cells // _MIN_STEPS_PER_EPOCH)
    if batch_size >= n_cells:
        log.warning(
            "--batch_size %d is not smaller than the %d training cells: every epoch is one step over all of them "
            "and the model barely trains; use --batch_size %d or less",
            batch_size, n_cells, better,
        )
    else:
        log.warning(
            "--batch_size %d: an epoch over the %d training cells is only %d steps; --batch_size %d or less trains better",
            batch_size, n_cells, steps, better,
        )
