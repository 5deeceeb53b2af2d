"""Rank scpermut option variants on the whole benchmark, so that a default is chosen on every fold, never one set.

    /work/bench-venv/bin/python benchmarks/choose_defaults.py --variants '{"align 0.5": {"align_weight": 0.5}}'
    /work/bench-venv/bin/python benchmarks/choose_defaults.py --variants variants.json --profile standard

Each variant is scpermut with options changed from the profile's own (``defaults`` — no change —
always runs). It runs on every split of the profile's leave-one-batch-out, novel-type and
SYNTHETIC-atlas tasks (the full profile: every held-out batch and every type of every shipped
dataset, both atlas draws), once per seed. Results are stored and reused like ``run.py``'s
(``cache.py``): an interrupted search resumes, a change of code or settings recomputes.

Printed per variant: mean ± sd over seeds of balanced accuracy, iLISI and the scib-metrics
total (held-out batches and atlas), novel recall and false rejection (novel task), and the
**aggregate** they are ranked by (:data:`AGGREGATE`): for each seed, the mean of those five,
each first averaged over the folds of a dataset and then over datasets, false rejection entering
as 1 − false rejection. The runners-up are judged against the first by ``verdict.RULE``: a
variant within the seed-to-seed sd of the first is a tie, not a loss.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cache  # noqa: E402
import profiles  # noqa: E402
import run  # noqa: E402
import tasks  # noqa: E402
import verdict  # noqa: E402

TASKS = ["lobo", "novel"]
# metric -> (tasks it is read on, whether higher is better)
AGGREGATE = {
    "balanced_accuracy": (("lobo", "batches"), True),
    "ilisi": (("lobo", "batches"), True),
    "scib_total": (("lobo", "batches"), True),
    "novel_recall": (("novel",), True),
    "false_rejection": (("novel",), False),
}


def per_seed(scores, metric: str, metric_tasks) -> "pd.Series":  # noqa: F821
    """Per (variant, seed): ``metric`` averaged over the folds of each dataset, then over datasets."""
    rows = scores[scores["task"].isin(metric_tasks)].dropna(subset=[metric])
    by_dataset = rows.groupby(["method", "seed", "task", "dataset"])[metric].mean()
    return by_dataset.groupby(level=["method", "seed"]).mean()


def ranking(scores) -> "pd.DataFrame":  # noqa: F821
    """One row per variant: mean and sd over seeds of each metric of ``AGGREGATE`` and of the aggregate, best first."""
    import pandas as pd

    columns, terms = {}, []
    for metric, (metric_tasks, higher) in AGGREGATE.items():
        values = per_seed(scores, metric, metric_tasks)
        if values.empty:
            continue
        columns[metric] = values
        terms.append(values if higher else 1 - values)
    frame = pd.DataFrame(columns)
    frame["aggregate"] = pd.concat(terms, axis=1).mean(axis=1)
    grouped = frame.groupby(level="method")
    table = pd.concat({"mean": grouped.mean(), "sd": grouped.std(ddof=1)}, axis=1)
    table["n_seeds"] = grouped.size()
    return table.sort_values(("mean", "aggregate"), ascending=False)


WORDS = {"met": "better than", "missed": "worse than", "tie": "tie (within the seed sd) with", "no verdict": "no verdict against"}


def lines(table) -> list[str]:
    """The ranking as text: each metric mean ± sd, and each runner-up's verdict against the first."""
    metrics = list(table["mean"].columns)
    out = ["rank  " + "  ".join(f"{m:>21s}" for m in metrics) + "  variant"]
    first = table.index[0]
    for rank, name in enumerate(table.index, start=1):
        row = table.loc[name]
        cells = "  ".join(f"{row[('mean', m)]:>13.3f} ± {row[('sd', m)]:.3f}" for m in metrics)
        judged = ""
        if name != first:
            a, b = table.loc[name], table.loc[first]
            result = verdict.verdict(a[("mean", "aggregate")], a[("sd", "aggregate")], int(a["n_seeds"].iloc[0]), b[("mean", "aggregate")], b[("sd", "aggregate")], int(b["n_seeds"].iloc[0]))
            judged = f"  ({WORDS[result]} {first})"
        out.append(f"{rank:>4d}  {cells}  {name}{judged}")
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", required=True, help="JSON object (or a file holding one): variant name -> scpermut options changed.")
    parser.add_argument("--profile", choices=sorted(profiles.PROFILES), default="full", help="Whose datasets, folds, seeds and settings (full: every fold; quick: checks the machinery).")
    parser.add_argument("--outdir", type=Path, default=None, help="Work folder (default: benchmarks/results/defaults_<profile>).")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plan", action="store_true", help="Print the runs, and stop.")
    args = parser.parse_args(argv)

    text = Path(args.variants).read_text() if Path(args.variants).is_file() else args.variants
    variants = {"defaults": {}, **json.loads(text)}
    base = profiles.PROFILES[args.profile]
    profile = {**base, "tasks": TASKS, "variants": variants, "threads": args.threads}
    outdir = args.outdir or HERE / "results" / f"defaults_{base['name']}"
    splits = tasks.plan(profile)
    if args.plan:
        for (name, task, dataset), members in run.group_runs(splits, profile).items():
            print(f"{name:30s} {task:8s} {dataset:22s} {sum(len(s.run_seeds) for s in members):3d} runs")
        return
    import report

    code = cache.code_fingerprints(cache.package_folder())
    paths, split_keys = run.write_splits(splits, outdir / "splits", code)
    records = run.run_methods(splits, paths, split_keys, profile, outdir, code, report.versions())
    scores = run.score_all(splits, paths, split_keys, profile, outdir, records)
    scores.to_csv(outdir / "scores.csv", index=False)
    failed = scores[scores["status"] != "ok"]
    if not failed.empty:
        print(f"{len(failed)} runs failed: {sorted(set(failed['method']))}; see the logs under {outdir / 'runs'}")
    print(f"profile {base['name']}: {len(splits)} splits x seeds {base['seeds']}; aggregate = mean over seeds of the mean of {', '.join(AGGREGATE)} (1 - false_rejection)")
    print("\n".join(lines(ranking(scores[scores["status"] == "ok"]))))


if __name__ == "__main__":
    main()
