"""The HTML report of ``scpermut tune``: the trials, the optimisation history and the parameters' importance."""

from __future__ import annotations

import pandas as pd

from scpermut._version import __version__
from scpermut.report import html, plots
from scpermut.report.sections import now

MIN_TRIALS_FOR_IMPORTANCE = 2


def tune_report(study, mixing_weight: float, seed: int) -> str:
    """The tune report of an Optuna study as one HTML string; ``seed`` seeds the importance estimate."""
    trials = trials_table(study)
    score = f"score = {1 - mixing_weight:g} × balanced accuracy + {mixing_weight:g} × batch mixing"
    sections = [
        html.Section("trials", "Trials").add(html.text(score, "note")).add(html.table(trials, "trials")),
        _history_section(trials),
        _importance_section(study, seed),
    ]
    return html.page("scpermut tune report", f"{len(trials)} trials — scpermut {__version__} — {now()}", sections)


def trials_table(study) -> pd.DataFrame:
    """One row per trial: number, state, score, its two parts and the trial's parameters."""
    return pd.DataFrame(
        [
            {
                "trial": trial.number,
                "state": trial.state.name,
                "score": trial.value,
                "balanced accuracy": trial.user_attrs.get("balanced_accuracy"),
                "batch mixing": trial.user_attrs.get("batch_mixing"),
                **trial.params,
            }
            for trial in study.trials
        ]
    )


def _history_section(trials: pd.DataFrame) -> html.Section:
    section = html.Section("history", "Optimisation history")
    complete = trials[trials["state"] == "COMPLETE"]
    if complete.empty:
        return section.add(html.text("No trial has completed yet.", "note"))
    png = plots.optimisation_history(complete["trial"].to_numpy(), complete["score"].to_numpy(float))
    caption = "Score of each completed trial and the best score so far."
    return section.add(html.image(png, caption, "optimisation_history"))


def _importance_section(study, seed: int) -> html.Section:
    import optuna

    section = html.Section("importance", "Parameter importance")
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < MIN_TRIALS_FOR_IMPORTANCE:
        too_few = f"Too few completed trials to estimate parameter importance (fewer than {MIN_TRIALS_FOR_IMPORTANCE})."
        return section.add(html.text(too_few, "note"))
    evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
    importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    if not importances:
        return section.add(html.text("No parameter was searched: every option was fixed on the command line.", "note"))
    png = plots.param_importances(importances)
    caption = "Share of the score's variance explained by each searched parameter (fANOVA over the completed trials)."
    return section.add(html.image(png, caption, "param_importance"))
