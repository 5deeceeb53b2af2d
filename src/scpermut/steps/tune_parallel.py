"""The search of ``scpermut tune`` as independent tasks: plan the trials, run each alone, select the best.

A sequential study's TPE sampler learns from the finished trials, so trials run in parallel
would depend on which ones happened to finish first. Here the plan draws every trial's values
up front with Optuna's seeded random sampler (TPE's own first trials are random draws too): the
same seed gives the same trial files whatever runs them, in any order, on any machine. Trials
are not pruned (there is no shared study to compare them with); each is scored like a
sequential trial (:func:`~scpermut.steps.tune.trial_score`).

- ``plan_trials`` writes ``OUT/trials/trial_000.json`` ... (number, seed, mixing weight, drawn options);
- ``run_trial`` trains one of them on ``prepared.h5ad`` and writes ``OUT/score.json``;
- ``select_best`` reads the score files and writes ``best_params.json``, ``trials.tsv`` and the
  MultiQC table ``tune_trials_mqc.tsv``. The best score wins, ties go to the lowest trial number.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pandas as pd

from scpermut import _atomic, constants
from scpermut.errors import InputError
from scpermut.options import TUNE, check, default, read_json_file
from scpermut.steps.tune import (
    SEARCH_SPACE,
    import_optuna,
    read_tuning_data,
    suggest_options,
    trial_score,
)

log = logging.getLogger(__name__)

TRIALS_DIR = "trials"


def _json_values(values: dict) -> dict:
    """Option values as JSON holds them (tuples as lists)."""
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


def plan_trials(out: str | Path, *, trials: int, mixing_weight: float = TUNE["mixing_weight"].default, seed: int = default("seed"), fixed: tuple[str, ...] = ()) -> list[Path]:
    """Write one JSON file per trial in ``OUT/trials/``; the options named in ``fixed`` are not searched."""
    optuna = import_optuna()
    check({"mixing_weight": mixing_weight}, TUNE)
    if trials < 1:
        raise InputError("`trials` must be at least 1.")
    unknown = sorted(set(fixed) - set(SEARCH_SPACE))
    if unknown:
        raise InputError(f"`tune_fixed`: {', '.join(unknown)} is not a searched option (searched: {', '.join(SEARCH_SPACE)}).")
    space = {name: bounds for name, bounds in SEARCH_SPACE.items() if name not in fixed}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=seed))
    with _atomic.atomic_path(Path(out) / TRIALS_DIR) as folder:
        folder.mkdir()
        for number in range(trials):
            plan = {"number": number, "seed": seed, "mixing_weight": mixing_weight, "options": _json_values(suggest_options(study.ask(), space))}
            (folder / f"trial_{number:03d}.json").write_text(_atomic.json_text(plan))
    return sorted((Path(out) / TRIALS_DIR).glob("trial_*.json"))


def _read_json(path: Path, required: tuple[str, ...]) -> dict:
    data = read_json_file(path)
    missing = [key for key in required if not isinstance(data, dict) or key not in data]
    if missing:
        raise InputError(f"{path}: missing {', '.join(missing)}; is it a file of `scpermut tune-plan`/`tune-trial`?")
    return data


def run_trial(
    prepared_path: str | Path,
    trial_path: str | Path,
    out: str | Path,
    *,
    device: str = "auto",
    mixed_precision: bool = False,
    data_access: str = "auto",
    mlflow_uri: str | None = None,
    **options,
) -> dict:
    """Train the trial of ``trial_path`` (its options win over ``options``) and write ``OUT/score.json``.

    The score file holds the trial number, the score and its parts, and ``params``: every
    training option the trial used, so ``train --params`` on it trains the same model. With
    ``mlflow_uri`` the trial is the MLflow run ``tune trial <n>``, as in a sequential search.
    """
    from scpermut.model.api import Model
    from scpermut.tracking import log_record, tracked_run

    trial_path = Path(trial_path)
    plan = _read_json(trial_path, ("number", "seed", "mixing_weight", "options"))
    check({"mixing_weight": plan["mixing_weight"]}, TUNE)
    planned = {name: tuple(value) if isinstance(value, list) else value for name, value in plan["options"].items()}
    values = {**options, **planned, "seed": plan["seed"]}
    adata, batch_key = read_tuning_data(Path(prepared_path), device, mixed_precision, values, data_access)
    with tracked_run(mlflow_uri, f"tune trial {plan['number']}", values) as callbacks:
        model = Model(**values).fit(adata, callbacks=callbacks, source=str(prepared_path))
        scores = trial_score(model, adata, batch_key, plan["mixing_weight"])
        if mlflow_uri:
            log_record(model.record.run, scores)
    log.info("trial %d: score %.4f %s", plan["number"], scores["score"], scores)
    result = {"number": plan["number"], **scores, "params": _json_values({**values, "mixed_precision": mixed_precision})}
    _atomic.write_json(Path(out) / constants.TUNE_SCORE, result)
    return result


def select_best(score_paths, out: str | Path) -> dict:
    """Write ``best_params.json``, ``trials.tsv`` and ``tune_trials_mqc.tsv`` from trial score files; return the best."""
    from scpermut.report.multiqc import custom_content

    results = [_read_json(Path(path), ("number", "score", "balanced_accuracy", "batch_mixing", "params")) for path in score_paths]
    if not results:
        raise InputError("`tune-select` needs at least one score file.")
    numbers = [result["number"] for result in results]
    if len(set(numbers)) < len(numbers):
        raise InputError(f"score files {', '.join(map(str, score_paths))}: a trial number appears twice.")
    results.sort(key=lambda result: result["number"])
    scored = [result for result in results if not math.isnan(result["score"])]
    if not scored:
        raise InputError(f"score files {', '.join(map(str, score_paths))}: no trial has a score.")
    # max() keeps the first of equal scores: on a tie the lowest trial number wins.
    best = max(scored, key=lambda result: result["score"])
    table = pd.DataFrame(
        [
            {
                "number": result["number"],
                "score": result["score"],
                "balanced_accuracy": result["balanced_accuracy"],
                "batch_mixing": result["batch_mixing"],
                **{f"params_{name}": _cell(result["params"].get(name)) for name in SEARCH_SPACE},
            }
            for result in results
        ]
    )
    table = table.dropna(axis="columns", how="all")
    out = Path(out)
    with _atomic.atomic_path(out / constants.TUNE_TRIALS) as path:
        table.to_csv(path, sep="\t", index=False)
    shown = table.set_index(table["number"].map(lambda number: f"trial {number}")).drop(columns="number")
    description = (
        f"Each trial trained with its own options (columns params_*) and was scored on the prepared cells; "
        f"trial {best['number']} has the best score: its options are best_params.json."
    )
    _atomic.write_text(out / constants.MQC_TUNE_TRIALS, custom_content(shown, "scpermut_tune", "Tuning trials", description, "Trial"))
    _atomic.write_json(out / constants.TUNE_BEST_PARAMS, best["params"])
    return best


def _cell(value):
    """A table cell: ``hidden_layers`` as ``256,128``."""
    return ",".join(map(str, value)) if isinstance(value, list) else value
