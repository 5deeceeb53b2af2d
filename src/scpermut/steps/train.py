"""``scpermut train``: train on ``prepared.h5ad`` and write the model folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from scpermut import constants
from scpermut._atomic import file_sha256
from scpermut.data.io import read_training_cells
from scpermut.errors import InputError
from scpermut.model import persistence
from scpermut.model.api import Model
from scpermut.model.training_data import TrainingData
from scpermut.model.train import select_device
from scpermut.options import default

log = logging.getLogger(__name__)


def train_file(
    prepared_path: str | Path,
    model_dir: str | Path,
    *,
    device: str = "auto",
    mixed_precision: bool = False,
    data_access: str = "auto",
    resume: bool = False,
    overwrite: bool = False,
    recorded_input: str | Path | None = None,
    callbacks=(),
    **options,
) -> Model:
    """``scpermut train``: train on a ``prepared.h5ad`` and write the model folder.

    Checkpoints go to ``MODEL_DIR/checkpoint/`` after every epoch; the finished folder replaces
    them in one rename. ``data_access``: ``memory`` reads the model genes' matrix into memory,
    ``disk`` reads it from the file as training goes (:meth:`TrainingData.from_file`), ``auto``
    (default) the second when the first would fill more than half the free memory.
    ``recorded_input`` is the input path the model folder records (default:
    ``prepared_path``; ``scpermut run`` names the published file). ``callbacks`` are extra Keras
    callbacks for every phase (experiment tracking).
    """
    prepared_path, model_dir = Path(prepared_path), Path(model_dir)
    persistence.check_model_dir_free(model_dir, overwrite=overwrite, resume=resume)
    if not prepared_path.is_file():
        raise InputError(f"{prepared_path}: file not found.")
    device_name = select_device(device, mixed_precision)
    log.info("training on %s", device_name)
    with_counts = options.get("reconstruction", "mse") == "nb"
    if data_access == "auto":
        data_access = _automatic_access(prepared_path, with_counts)
    if data_access == "disk":
        log.info("reading the training cells from %s as training goes (--data_access disk)", prepared_path)
        data = TrainingData.from_file(prepared_path, with_counts=with_counts)
        n_cells = data.n_cells
    else:
        data = read_training_cells(prepared_path, with_counts=with_counts)
        n_cells = data.n_obs
    _check_batch_size(options.get("batch_size", default("batch_size")), n_cells)
    checkpoint_dir = model_dir / constants.CHECKPOINT_FOLDER
    if not resume:
        persistence.remove_checkpoint(checkpoint_dir)
    model = Model(**options).fit(
        data, checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, source=str(recorded_input or prepared_path)
    )
    model.record.run["device"] = device_name
    model.record.run["data_access"] = data_access
    model.record.run["input"].update(
        file=str(Path(recorded_input or prepared_path).resolve()), sha256=file_sha256(prepared_path)
    )
    persistence.save_model(model_dir, model.network, model.record)
    return model


def _automatic_access(path: Path, with_counts: bool) -> str:
    """``disk`` when the model genes' CSR matrix (values and column indices of the stored ones,
    scaled by the share of genes kept) would take more than half the free memory, else ``memory``."""
    import h5py

    with h5py.File(path, "r") as handle:
        matrix = handle.get("X")
        if not isinstance(matrix, h5py.Group) or "data" not in matrix:
            return "memory"  # dense or unusual: read_training_cells reads (or rejects) it
        n_genes = int(matrix.attrs["shape"][1])
        flags = handle.get("var/highly_variable")
        kept = int(np.count_nonzero(flags[:])) if isinstance(flags, h5py.Dataset) else n_genes
        needed = matrix["data"].shape[0] * 8 * kept / max(n_genes, 1) * (2 if with_counts else 1)
    free = available_memory()
    access = "disk" if needed > free / 2 else "memory"
    log.info("--data_access auto: the model genes' matrix needs ~%.1f GiB, %.1f GiB free: %s", needed / 2**30, free / 2**30, access)
    return access


def available_memory() -> float:
    """Bytes this process can still use: the kernel's MemAvailable (else the physical memory),
    at most what the control group (a container, a batch job) has left."""
    free = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    available = _read_numbers("/proc/meminfo", "MemAvailable:")
    if available is not None:
        free = available * 1024
    limit, used = _read_numbers("/sys/fs/cgroup/memory.max"), _read_numbers("/sys/fs/cgroup/memory.current")
    if limit is not None and used is not None:
        free = min(free, limit - used)
    return float(max(free, 0))


def _read_numbers(path: str, label: str | None = None) -> int | None:
    """The integer in a one-number file, or on the line starting with ``label``; None when absent
    (another system, no limit: ``max``)."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if label is not None and fields[:1] == [label]:
            fields = fields[1:]
        elif label is not None:
            continue
        return int(fields[0]) if fields and fields[0].isdigit() else None
    return None


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
