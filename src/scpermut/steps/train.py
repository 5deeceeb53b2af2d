"""``scpermut train``: train on ``prepared.h5ad`` and write the model folder."""

from __future__ import annotations

import logging
from pathlib import Path

from scpermut import _keys
from scpermut._atomic import file_sha256
from scpermut.errors import InputError
from scpermut.model import persistence
from scpermut.model.api import Model
from scpermut.model.train import select_device

log = logging.getLogger(__name__)


def read_prepared(path: Path, with_counts: bool):
    """Read what training needs from a ``prepared.h5ad``: X, obs, var and uns.

    The counts layer is read only when asked (the MSE loss never reads it, and it is as large as X).
    """
    import anndata as ad
    import h5py
    from anndata.io import read_elem

    with h5py.File(path, "r") as handle:
        parts = {name: read_elem(handle[name]) for name in ("X", "obs", "var", "uns") if name in handle}
        layers = {}
        if with_counts and _keys.COUNTS_LAYER in handle.get("layers", {}):
            layers[_keys.COUNTS_LAYER] = read_elem(handle["layers"][_keys.COUNTS_LAYER])
    return ad.AnnData(**parts, layers=layers)


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
    with_counts = options.get("reconstruction", "mse") == "nb"
    try:
        adata = read_prepared(prepared_path, with_counts=with_counts)
    except (OSError, KeyError, ValueError) as error:
        raise InputError(f"{prepared_path}: cannot be read as .h5ad ({error}).") from error
    if _keys.QC_PASS in adata.obs and not adata.obs[_keys.QC_PASS].all():
        # Cells to annotate that failed QC are annotated, never trained on.
        passed = adata.obs[_keys.QC_PASS].to_numpy(bool)
        log.info("training leaves out %d cells that failed QC", int((~passed).sum()))
        adata = adata[passed].copy()
    checkpoint_dir = model_dir / persistence.CHECKPOINT
    if not resume:
        persistence.remove_checkpoint(checkpoint_dir)
    model = Model(**options).fit(
        adata, checkpoint_dir=checkpoint_dir, resume=resume, callbacks=callbacks, source=str(prepared_path)
    )
    model.record.run["device"] = device_name
    model.record.run["input"].update(
        file=str(Path(recorded_input or prepared_path).resolve()), sha256=file_sha256(prepared_path)
    )
    persistence.save_model(model_dir, model.network, model.record)
    return model
