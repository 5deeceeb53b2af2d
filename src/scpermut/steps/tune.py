"""``scpermut tune``: a seeded, resumable Optuna search of training options on ``prepared.h5ad``.

Each trial trains a model (no model folder is written) and is scored on the data it trained on:

    score = (1 - mixing_weight) * balanced_accuracy + mixing_weight * batch_mixing

``balanced_accuracy`` is that of the validation cells (the model's run record), ``batch_mixing``
is :func:`scpermut.metrics.batch_mixing` (normalised neighbourhood batch entropy) of the latent
of every cell of the file. The study lives in ``OUT/study.db`` (SQLite): a killed or finished
search continues with the same command (``--trials`` is the total). Trials report the validation
balanced accuracy after each classifier epoch and a median pruner stops the poor ones.
"""

from __future__ import annotations

import logging
from pathlib import Path

from scpermut import _atomic, constants
from scpermut.errors import InputError, ScpermutError
from scpermut.keys import Keys
from scpermut.options import TUNE, check, default

log = logging.getLogger(__name__)

STUDY_NAME = "scpermut-tune"

# Option name -> ("int" | "float" | "log_float", low, high) or ("choice", values).
SEARCH_SPACE: dict[str, tuple] = {
    "latent_dim": ("int", 8, 64),
    "hidden_layers": ("choice", ("128", "256,128", "512,256", "512,256,128")),
    "dropout": ("float", 0.0, 0.5),
    "learning_rate": ("log_float", 1e-4, 1e-2),
    "rec_weight": ("float", 0.1, 2.0),
    "clf_weight": ("float", 0.1, 2.0),
    "dann_weight": ("float", 0.0, 1.5),
    "align_weight": ("float", 0.0, 6.0),
    "focal_gamma": ("float", 0.0, 4.0),
    "batch_size": ("choice", (64, 128, 256)),
    "epochs_warmup": ("int", 2, 20),
    "epochs_full": ("int", 10, 60),
    "epochs_finetune": ("int", 2, 20),
}


def suggest_options(trial, space: dict[str, tuple]) -> dict:
    """The trial's option values (``hidden_layers`` as a tuple of widths)."""
    values = {}
    for name, (kind, *bounds) in space.items():
        if kind == "int":
            values[name] = trial.suggest_int(name, *bounds)
        elif kind == "float":
            values[name] = trial.suggest_float(name, *bounds)
        elif kind == "log_float":
            values[name] = trial.suggest_float(name, *bounds, log=True)
        else:
            values[name] = trial.suggest_categorical(name, list(bounds[0]))
    if "hidden_layers" in values:
        values["hidden_layers"] = tuple(int(n) for n in values["hidden_layers"].split(","))
    return values


def _pruning_callback(trial):
    """A Keras callback reporting the validation balanced accuracy to Optuna after each epoch that has one."""
    import keras
    import optuna

    class ReportToTrial(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.step = 0  # counts epochs over every phase of the trial

        def on_epoch_end(self, epoch, logs=None):
            self.step += 1
            value = (logs or {}).get("val_balanced_accuracy")
            if value is None:
                return
            trial.report(float(value), self.step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at epoch {self.step}")

    return ReportToTrial()


def trial_score(model, adata, batch_key: str, mixing_weight: float) -> dict:
    """Balanced accuracy on the validation cells, batch mixing of the latent and their weighted score."""
    from scpermut.metrics import batch_mixing

    balanced = float((model.record.run.get("validation") or {}).get("balanced_accuracy", 0.0))
    latent = model.transform(adata[:, model.genes].X)["latent"]
    mixing = batch_mixing(latent, adata.obs[batch_key].to_numpy())["batch_entropy"]
    mixing = float(mixing) if mixing is not None else 0.0
    return {
        "balanced_accuracy": balanced,
        "batch_mixing": mixing,
        "score": (1 - mixing_weight) * balanced + mixing_weight * mixing,
    }


def import_optuna():
    try:
        import optuna
    except ImportError:
        raise ScpermutError("scpermut tune needs Optuna: pip install 'scpermut[tune]'.") from None
    return optuna


def read_tuning_data(prepared_path: Path, device: str, mixed_precision: bool, options: dict, data_access: str = "auto"):
    """The training cells of ``prepared_path`` and the recorded batch column, on the chosen device.
    Tuning trains many models on the same cells, so it holds them in memory (``data_access``
    ``disk`` is refused)."""
    from scpermut.data.io import read_training_cells
    from scpermut.model.train import select_device

    if not prepared_path.is_file():
        raise InputError(f"{prepared_path}: file not found.")
    if data_access == "disk":
        raise InputError("scpermut tune holds the training cells in memory: --data_access disk is for scpermut train (tune on a subsample of a large atlas).")
    select_device(device, mixed_precision)
    adata = read_training_cells(prepared_path, with_counts=options.get("reconstruction", "mse") == "nb")
    batch_key = Keys.from_record(adata.uns[constants.PREPARE_UNS]).batch_key
    if batch_key not in adata.obs:
        raise InputError(f"{prepared_path}: the recorded batch column '{batch_key}' is not in obs.")
    return adata, batch_key


def tune_file(
    prepared_path: str | Path,
    out: str | Path,
    *,
    trials: int,
    mixing_weight: float = TUNE["mixing_weight"].default,
    seed: int = default("seed"),
    fixed: tuple[str, ...] = (),
    device: str = "auto",
    mixed_precision: bool = False,
    data_access: str = "auto",
    mlflow_uri: str | None = None,
    **options,
):
    """Run (or continue) the search until the study has ``trials`` trials; write its results.

    ``options`` are training options every trial uses; those named in ``fixed`` are left out
    of the search. Writes ``OUT/best_params.json`` (option name -> value of the best trial),
    ``OUT/trials.tsv`` (one row per trial: number, state, score parts, parameters) and
    ``OUT/tune_report.html`` (the trials, optimisation history, parameter importance). With
    ``mlflow_uri`` each trial is an MLflow run (parameters, per-epoch metrics, run record, scores).

    Returns
    -------
    The Optuna study.
    """
    optuna = import_optuna()
    from scpermut.model.api import Model
    from scpermut.tracking import log_record, tracked_run

    check({"mixing_weight": mixing_weight}, TUNE)
    if trials < 1:
        raise InputError("`trials` must be at least 1.")
    prepared_path, out = Path(prepared_path), Path(out)
    adata, batch_key = read_tuning_data(prepared_path, device, mixed_precision, options, data_access)
    space = {name: bounds for name, bounds in SEARCH_SPACE.items() if name not in fixed}

    out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=f"sqlite:///{(out / constants.TUNE_STUDY).resolve()}",
        load_if_exists=True,
        direction="maximize",
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=2),
    )
    # A sampler seeded with `seed` alone would, on resuming, draw the first trials' values again:
    # offset the seed by the trials already in the study (deterministic given the study).
    study.sampler = optuna.samplers.TPESampler(seed=seed + len(study.trials))
    finished = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED, optuna.trial.TrialState.FAIL)

    def objective(trial) -> float:
        values = {**options, **suggest_options(trial, space), "seed": seed}
        with tracked_run(mlflow_uri, f"tune trial {trial.number}", values) as tracking:
            model = Model(**values).fit(adata, callbacks=[_pruning_callback(trial), *tracking], source=str(prepared_path))
            scores = trial_score(model, adata, batch_key, mixing_weight)
            if mlflow_uri:
                log_record(model.record.run, scores)
        for name in ("balanced_accuracy", "batch_mixing"):
            trial.set_user_attr(name, scores[name])
        log.info("trial %d: score %.4f %s", trial.number, scores["score"], scores)
        return scores["score"]

    # A trial killed mid-way stays RUNNING in the study and is not counted: it is run again anew.
    missing = trials - len([trial for trial in study.trials if trial.state in finished])
    if missing > 0:
        study.optimize(objective, n_trials=missing, catch=())
    else:
        log.info("tune: the study already has %d finished trials (asked for %d)", trials - missing, trials)
    write_results(study, out, mixing_weight, seed)
    return study


def write_results(study, out: Path, mixing_weight: float, seed: int) -> None:
    """``trials.tsv``, ``tune_report.html`` (importance seeded with ``seed``) and ``best_params.json``.

    ``best_params.json`` holds the best trial's values, lists for ``hidden_layers``.
    """
    import optuna

    from scpermut.report.tune import tune_report

    table = study.trials_dataframe(attrs=("number", "state", "value", "params", "user_attrs", "duration"))
    with _atomic.atomic_path(out / constants.TUNE_TRIALS) as path:
        table.to_csv(path, sep="\t", index=False)
    _atomic.write_text(out / constants.TUNE_REPORT_HTML, tune_report(study, mixing_weight, seed))
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if not complete:
        log.warning("tune: no trial finished; %s not written", constants.TUNE_BEST_PARAMS)
        return
    best = dict(study.best_trial.params)
    if "hidden_layers" in best:
        best["hidden_layers"] = [int(n) for n in str(best["hidden_layers"]).split(",")]
    _atomic.write_json(out / constants.TUNE_BEST_PARAMS, best)
