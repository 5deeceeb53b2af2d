"""Optional experiment tracking with MLflow (``--mlflow_uri``): parameters, per-epoch metrics, run record.

Off unless a tracking URI is given; a local folder (``file:/path/mlruns`` or a path) works offline.
Needs ``mlflow-skinny`` (``pip install 'scpermut[tracking]'``).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

from scpermut._atomic import json_text
from scpermut.errors import ScpermutError

log = logging.getLogger(__name__)

EXPERIMENT = "scpermut"


def _mlflow():
    try:
        import mlflow
    except ImportError:
        raise ScpermutError("--mlflow_uri needs MLflow: pip install 'scpermut[tracking]'.") from None
    return mlflow


def _numeric(values: dict) -> dict[str, float]:
    """The entries MLflow can log as metrics (numbers), as floats."""
    return {name: float(value) for name, value in values.items() if isinstance(value, int | float)}


def epoch_logger():
    """A Keras callback logging every numeric epoch log (loss, validation scores) to the active MLflow run.

    Steps count epochs over every training phase.
    """
    import keras

    mlflow = _mlflow()

    class EpochMetrics(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0

        def on_epoch_end(self, epoch, logs=None):
            self.step += 1
            metrics = _numeric(logs or {})
            if metrics:
                mlflow.log_metrics(metrics, step=self.step)

    return EpochMetrics()


@contextlib.contextmanager
def tracked_run(uri: str | None, run_name: str, params: dict) -> Iterator[list]:
    """An MLflow run in experiment ``scpermut`` at ``uri`` logging ``params``; yields the training callbacks.

    With ``uri`` None nothing is tracked and the callback list is empty. A run that raises is
    marked FAILED (MLflow's run context does it), never FINISHED.
    """
    if not uri:
        yield []
        return
    if urlparse(uri).scheme in ("", "file") and "MLFLOW_ALLOW_FILE_STORE" not in os.environ:
        # MLflow 3 keeps its folder store in maintenance mode and refuses it unless asked; a folder
        # is what works offline with no server, so scpermut asks (set the variable to override).
        log.info("MLflow folder store %s (MLflow calls it maintenance mode; sqlite:///FILE.db also works)", uri)
        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow = _mlflow()
    try:
        mlflow.set_tracking_uri(uri)
        mlflow.set_experiment(EXPERIMENT)
    except mlflow.exceptions.MlflowException as error:
        raise ScpermutError(f"--mlflow_uri {uri}: MLflow cannot use it ({str(error).splitlines()[0]}).") from None
    with mlflow.start_run(run_name=run_name):
        mlflow.log_params({name: str(value) for name, value in params.items()})
        yield [epoch_logger()]


def log_record(record: dict, metrics: dict | None = None) -> None:
    """Log the model's run record (``run.json``) and final metrics to the active MLflow run, if any."""
    mlflow = _mlflow()
    if mlflow.active_run() is None:
        return
    mlflow.log_text(json_text(record), "run.json")
    if metrics:
        mlflow.log_metrics(_numeric(metrics))


def log_folder(folder: str | Path, name: str) -> None:
    """Log every file of ``folder`` as artifacts under ``name`` of the active MLflow run, if any."""
    mlflow = _mlflow()
    if mlflow.active_run() is None:
        return
    mlflow.log_artifacts(str(folder), name)
