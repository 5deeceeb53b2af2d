"""Write docs/benchmarks.md and docs/img/bench_*.png from one run's scores and cost measures.

Every number in the page comes from this run; nothing is typed in by hand.
"""

from __future__ import annotations

import json
import os
import platform
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import profiles
import verdict

PACKAGES = ("scpermut", "sc-musketeers", "scvi-tools", "torch", "celltypist", "harmonypy", "tensorflow-cpu", "keras", "scanpy", "anndata", "scikit-learn", "numpy")
TASK_TITLES = {
    "lobo": "Task 1 — leave one batch out",
    "partial": "Task 2 — partial atlas",
    "rare": "Task 3 — rare cell type (~1 % of the reference)",
    "ablation": "Task 4 — ablation (leave-one-batch-out splits)",
    "novel": "Task 5 — novel type (absent from the reference, kept in the query)",
    "batches": "Task 6 — SYNTHETIC many-batch atlas (leave batches out)",
}
# scib-metrics' Benchmarker aggregates (scoring.SCIB_COLUMNS), shown beside the other scores.
SCIB = ["scib_bio", "scib_batch", "scib_total"]
NOVEL = ["novel_recall", "false_rejection", "novelty_auroc", "balanced_accuracy"]
# The target for unseen types at the defaults: recall at least this, false rejection at most this.
NOVEL_TARGET = {"novel_recall": 0.8, "false_rejection": 0.10}


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    header = "| " + " | ".join(str(c) for c in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    rows = ["| " + " | ".join(fmt(v, digits) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def method_order(names) -> list[str]:
    order = list(profiles.PEERS) + [profiles.rejection_name(m) for m in profiles.REJECTION_RULES] + list(profiles.TUNED) + list(profiles.ABLATIONS)
    return sorted(set(names), key=lambda n: order.index(n) if n in order else len(order))


def mean_sd(values: pd.Series) -> str:
    values = values.dropna()
    if values.empty:
        return "–"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}" if len(values) > 1 else f"{values.mean():.3f}"


def summary_table(frame: pd.DataFrame, columns: list[str], by: list[str]) -> pd.DataFrame:
    """Mean ± sd over seeds of ``columns`` per ``by`` group (each seed's value averaged over the group's splits first)."""
    rows = []
    for keys, group in frame.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        row = dict(zip(by, keys, strict=True))
        row["splits"] = group["split"].nunique()
        row["seeds"] = group["seed"].nunique()
        for column in columns:
            if column not in group:
                row[column] = "–"
            elif column == "seconds":  # the first split of a process also pays for imports and JIT
                row["median s per run"] = f"{group[column].median():.1f}"
            elif column == "peak_rss_mib":
                row["peak RSS (MiB)"] = f"{group[column].max():.0f}"
            else:
                row[column] = mean_sd(group.groupby("seed")[column].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    table["_order"] = table["method"].map({m: i for i, m in enumerate(method_order(table["method"]))})
    return table.sort_values([c for c in by if c != "method"] + ["_order"]).drop(columns="_order")


def bar_plot(frame: pd.DataFrame, value: str, group: str, path: Path, title: str, ylabel: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_seed = frame.groupby([group, "method", "seed"])[value].mean()
    means = per_seed.groupby(level=[0, 1]).mean().unstack("method")
    errors = per_seed.groupby(level=[0, 1]).std(ddof=1).unstack("method")  # seed-to-seed
    methods = method_order(means.columns)
    means, errors = means[methods], errors[methods]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(means) * len(methods) / 3), 4))
    width = 0.8 / len(methods)
    for i, method in enumerate(methods):
        positions = np.arange(len(means)) + i * width
        ax.bar(positions, means[method], width, yerr=errors[method].fillna(0), label=method, capsize=2)
    ax.set_xticks(np.arange(len(means)) + 0.4 - width / 2)
    ax.set_xticklabels(means.index)
    ax.set_ylabel(ylabel)
    lowest = float(np.nanmin((means - errors.fillna(0)).to_numpy()))
    ax.set_ylim(max(0.0, lowest - 0.1), 1.02)  # zoomed: differences between methods are a few points
    ax.set_title(title)
    ax.legend(fontsize=7, ncol=3, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def partial_plot(frame: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = frame.assign(fraction=frame["split"].str.split("pct").str[0].astype(float))
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in method_order(frame["method"]):
        curve = frame[frame["method"] == method].groupby(["fraction", "seed"])["balanced_accuracy"].mean().groupby(level=0).agg(["mean", "std"])
        ax.errorbar(curve.index, curve["mean"], yerr=curve["std"].fillna(0), marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.minorticks_off()
    ax.set_xticks(sorted(frame["fraction"].unique()))
    ax.set_xticklabels([f"{f:g}%" for f in sorted(frame["fraction"].unique())])
    ax.set_xlabel("cells labelled")
    ax.set_ylabel("balanced accuracy (unlabelled cells)")
    ax.set_title("Partial atlas")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def scaling_plot(scaling: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [run for run in scaling if "epoch_seconds" in run]
    if not runs:
        return
    cells = [run["n_cells"] for run in runs]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6))
    left.plot(cells, [run["epoch_seconds"] for run in runs], marker="o")
    for run in runs:
        if run.get("epoch_seconds_extrapolated"):
            left.annotate("extrapolated", (run["n_cells"], run["epoch_seconds"]), fontsize=7)
    left.set(xscale="log", yscale="log", xlabel="SYNTHETIC cells", ylabel="seconds per epoch (full phase)", title="Time per epoch")
    right.plot(cells, [run["peak_rss_mib"] / 1024 for run in runs], marker="o", label="peak RSS")
    right.axhline(24, color="grey", linestyle="--", label="24 GiB")
    right.set(xscale="log", xlabel="SYNTHETIC cells", ylabel="GiB", title="Peak memory of the training process")
    right.legend(fontsize=7)
    fig.suptitle("scpermut scaling on synthetic cells (resampled real cells + count noise)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt_summary(value: tuple) -> str:
    mean, sd, seeds = value
    return f"{mean:.3f} ± {sd:.3f} ({seeds} seeds)" if seeds > 1 else f"{mean:.3f} (1 seed)"


def targets(scores: pd.DataFrame) -> list[str]:
    """One line per task, dataset and metric: the verdict of ``verdict.RULE``, with the numbers behind it."""
    lines = []
    ok = scores[scores["status"] == "ok"]
    peers = [m for m in profiles.PEERS if m != "scpermut"]
    rejecting = [profiles.rejection_name(m) for m in profiles.REJECTION_RULES]
    judged = (
        ("lobo", "balanced_accuracy"), ("lobo", "ilisi"), ("lobo", "scib_bio"), ("lobo", "scib_total"),
        ("partial", "balanced_accuracy"), ("rare", "rare_type_f1"), ("rare", "balanced_accuracy"),
        ("novel", "novelty_auroc"), ("novel", "balanced_accuracy"),
        ("batches", "balanced_accuracy"), ("batches", "ilisi"), ("batches", "scib_bio"), ("batches", "scib_total"),
    )
    for task, metric in judged:
        for dataset, frame in ok[(ok["task"] == task) & ok["method"].isin([*profiles.PEERS, *rejecting])].groupby("dataset"):
            if metric not in frame or frame[metric].isna().all():
                continue
            # pca_knn's embedding is the uncorrected baseline: mixing is judged against the correcting peers.
            against = [p for p in peers if p != "pca_knn"] if metric in ("ilisi", "scib_batch", "scib_total") else peers
            best = verdict.compare(frame, metric, "scpermut", against)
            if best is None:
                lines.append(f"- {TASK_TITLES[task]}, {dataset}: scpermut has no result — **missed**.")
                continue
            musk = verdict.compare(frame, metric, "scpermut", ["scmusketeers"])
            against_musk = f"; against scMusketeers {_fmt_summary(musk['best'])}: **{musk['verdict']}**" if musk else ""
            lines.append(
                f"- {TASK_TITLES[task]}, {dataset}, {metric.replace('_', ' ')} over {frame['setting'].nunique()} split setting(s) × seeds: "
                f"scpermut {_fmt_summary(best['ours'])}; best peer {best['best_peer']} {_fmt_summary(best['best'])}: **{best['verdict']}**{against_musk}."
            )
    for dataset, frame in ok[(ok["task"] == "novel") & (ok["method"] == "scpermut")].groupby("dataset"):
        recall, rejected = (verdict.seed_summary(frame, metric, ["method"]).iloc[0] for metric in NOVEL_TARGET)
        met = recall["mean"] >= NOVEL_TARGET["novel_recall"] and rejected["mean"] <= NOVEL_TARGET["false_rejection"]
        lines.append(
            f"- {TASK_TITLES['novel']}, {dataset}, at scpermut's defaults: novel recall {recall['mean']:.3f} ± {recall['sd']:.3f}, "
            f"false rejection {rejected['mean']:.3f} ± {rejected['sd']:.3f} (target: recall ≥ {NOVEL_TARGET['novel_recall']} with false rejection ≤ {NOVEL_TARGET['false_rejection']}): "
            f"**{'met' if met else 'missed'}**."
        )
    return lines


def novel_section(ok: pd.DataFrame, img: Path, prefix: str) -> list[str]:
    """Rejection of the type removed from the reference: each method's own answer and the stated peer rules."""
    novel = ok[ok["task"] == "novel"]
    if novel.empty:
        return []
    rules = "; ".join(f"`{profiles.rejection_name(m)}`: {m}'s answers with every cell of highest class probability ≤ {t:g} called Unknown" for m, t in profiles.REJECTION_RULES.items())
    bar_plot(novel.dropna(subset=["novel_recall"]), "novel_recall", "dataset", img / f"{prefix}novel.png", "Novel type: share of its query cells answered Unknown", "novel recall")
    per_type = novel.pivot_table(index=["dataset", "setting"], columns="method", values="novel_recall", aggfunc="mean")
    per_type = per_type[method_order(per_type.columns)].reset_index().rename(columns={"setting": "type removed"})
    return [
        f"## {TASK_TITLES['novel']}",
        "",
        "Each type of each dataset in turn is removed from the reference (its reference cells dropped) and kept in the query, the batch holding most of it; "
        "every other batch is the labelled reference. **Novel recall**: share of the query's cells of types the reference lacks answered Unknown; "
        "**false rejection**: share of the query's known-type cells answered Unknown; **AUROC** of the method's novelty score for unseen against known "
        "(scpermut: `scpermut_novelty` when the package writes it, else 1 − `scpermut_confidence`; CellTypist and scANVI: 1 − highest class probability; "
        "0.5 = chance, – = no score); balanced accuracy over the known-type query cells. "
        f"Each method's own answer, plus the stated rules — {rules}. CellTypist's rule is its own 'prob match' rejection at its documented default "
        "(`p_thres` 0.5: 'Unassigned' when no class exceeds it); scANVI has no rejection of its own.",
        "",
        f"![novel](img/{prefix}novel.png)",
        "",
        markdown_table(summary_table(novel, [*NOVEL, "seconds"], ["dataset", "method"])),
        "",
        "<details><summary>Novel recall per removed type (mean over seeds)</summary>",
        "",
        markdown_table(per_type),
        "",
        "</details>",
        "",
    ]


def atlas_section(ok: pd.DataFrame, splits) -> list[str]:
    """The SYNTHETIC many-batch atlas: what it is, and every method's scores on it."""
    import tasks

    atlas_rows = ok[ok["task"] == "batches"]
    if atlas_rows.empty:
        return []
    lines = [f"## {TASK_TITLES['batches']}", ""]
    for name in sorted(atlas_rows["dataset"].unique()):
        params = tasks.DATASETS[name].params
        lines.append(
            f"`{name}` is **SYNTHETIC** (`benchmarks/atlas.py`, seed {params.seed}): {params.n_cells:,} cells × {params.n_genes:,} genes, "
            f"{params.n_types} types in lineages of {params.types_per_lineage} with Zipf abundances (the {params.n_very_rare} rarest × {params.very_rare_factor}), "
            f"{params.n_batches} batches of uneven size each holding a subset of the types, a per-batch gene-wise log-fold shift ~ N(0, {params.batch_lfc_sd}) "
            f"and library-size factor (log-normal, sd {params.library_batch_sd}), negative-binomial counts (θ {params.nb_theta}). "
            f"Splits: {'; '.join(s.description for s in splits if s.dataset == name)}; the other batches are the labelled reference. "
            "`pca_knn` is the ground truth of the batch effect: its iLISI is that of the uncorrected PCA (`python benchmarks/atlas.py` compares it with the same cells without the gene-wise shift)."
        )
    lines += ["", markdown_table(summary_table(atlas_rows, ["balanced_accuracy", "macro_f1", "ilisi", "batch_entropy", *SCIB, "seconds", "peak_rss_mib"], ["dataset", "method"])), ""]
    return lines


def chosen_options(frame: pd.DataFrame) -> str:
    """The options a tuned entry trained with, from the settings its runs recorded (one search per split)."""
    chosen = {json.dumps(json.loads(text).get("changed", {}), sort_keys=True) for text in frame["settings"].dropna()}
    return "; ".join(f"`{text}`" for text in sorted(chosen)) or "–"


def tuned_section(ok: pd.DataFrame, profile: dict) -> list[str]:
    """scpermut at its defaults against scpermut with the options of a ``scpermut tune`` search, split by split."""
    lines = []
    for name, search in profiles.TUNED.items():
        both = ok[(ok["task"] == "lobo") & ok["method"].isin(["scpermut", name]) & ok["dataset"].isin(profile.get("tuned_datasets", ()))]
        if both["method"].nunique() < 2:
            continue
        lines += [
            "## Tuned against default",
            "",
            f"`{name}`: a seeded `scpermut tune` search ({search['trials']} trials, TPE, median pruning, `--mixing_weight {search['mixing_weight']}`) "
            "on each leave-one-batch-out split's prepared data — the reference's labels, scored on its validation cells, and every cell's batch; never the query's "
            "labels — once per split (seed 0); every seed then trains with the options it picked. Verdicts by the rule above, tuned against default.",
            "",
            markdown_table(summary_table(both, ["balanced_accuracy", "macro_f1", "ilisi", "batch_entropy", "label_silhouette", "seconds"], ["dataset", "method"])),
            "",
        ]
        for dataset, frame in both.groupby("dataset"):
            parts = []
            for metric in ("balanced_accuracy", "ilisi"):
                result = verdict.compare(frame, metric, name, ["scpermut"])
                if result:
                    parts.append(f"{metric.replace('_', ' ')} {_fmt_summary(result['ours'])} against {_fmt_summary(result['best'])}: **{result['verdict']}**")
            lines.append(f"- {dataset}: " + "; ".join(parts) + f". Options chosen: {chosen_options(frame[frame['method'] == name])}.")
        lines += [
            "",
            "The tuned entry's search runs once per split inside its first seed's run, whose time includes it (`scores.csv`); the median time per run is mostly that of training with the chosen options.",
            "",
        ]
    return lines


def cost_section(cost: dict, img: Path) -> list[str]:
    out = ["## Cost", ""]
    compare = cost["compare"]
    ours, theirs = compare["scpermut"], compare["scmusketeers"]
    rows = []
    for run in (ours, theirs):
        if "train_seconds" not in run:
            rows.append({"tool": run.get("tool", run["name"]), "result": run.get("error", "failed")})
            continue
        rows.append(
            {
                "tool": run["tool"],
                "cells": run["n_cells"],
                "epochs": run["epochs_run"],
                "cells per epoch": run["cells_per_epoch"],
                "s per epoch": run["epoch_seconds"],
                "cells·epochs/s": run["cells_per_epoch"] * run["epochs_run"] / run["train_seconds"],
                "peak RSS (MiB)": run["peak_rss_mib"],
            }
        )
    out += [
        f"Head-to-head on {fmt(ours.get('n_cells'))} SYNTHETIC cells × 2,000 genes, same architecture "
        f"(encoder {ours.get('architecture', {}).get('hidden_layers')} → latent {ours.get('architecture', {}).get('latent_dim')}, "
        "64-unit classifier and batch heads, dropout 0.1, batch 128, Adam 1e-3), same epochs of each tool's main phase "
        "(scpermut `full` at its defaults: permutation, pseudo-labelled cells included, + focal classifier + kernel alignment on all cells, no batch head; "
        "scMusketeers `full_model`: permutation + classifier + DANN), each in its own process.",
        "",
        markdown_table(pd.DataFrame(rows), 2),
        "",
    ]
    if "train_seconds" in ours and "train_seconds" in theirs:
        throughput = (ours["cells_per_epoch"] * ours["epochs_run"] / ours["train_seconds"]) / (theirs["cells_per_epoch"] * theirs["epochs_run"] / theirs["train_seconds"])
        epoch_ratio = theirs["epoch_seconds"] / ours["epoch_seconds"]
        memory = ours["peak_rss_mib"] / theirs["peak_rss_mib"]
        out += [
            f"- Throughput ratio scpermut / scMusketeers (cells·epochs/s): **{throughput:.2f}×** (target ≥ 3×: {'met' if throughput >= 3 else '**missed**'}).",
            f"- Wall time per epoch, scMusketeers / scpermut: {epoch_ratio:.2f}× (an scMusketeers epoch iterates over its 'train' split only, {fmt(theirs['cells_per_epoch'])} cells, and then scores train and validation cells; a scpermut epoch iterates over all {fmt(ours['cells_per_epoch'])} cells).",
            f"- Peak memory ratio scpermut / scMusketeers: **{memory:.2f}** (target well under 1: {'met' if memory < 0.75 else '**missed**'}). scMusketeers densifies the whole matrix; scpermut densifies one mini-batch at a time.",
            "",
        ]
    out += [
        "### Scaling (SYNTHETIC cells)",
        "",
        "scpermut's `full` phase at its defaults (permutation with pseudo-labels + focal classifier + kernel alignment), default architecture, on synthetic cells held as `scpermut train` holds a "
        "`prepared.h5ad`: log-normalised `X` and the raw-count layer, both sparse. Up to 100k cells a whole epoch is timed (including the per-epoch "
        "validation pass); at 1M, a few hundred steps are timed and the epoch is extrapolated as steps per epoch × median step + the measured per-epoch overhead.",
        "",
        "![scaling](img/bench_scaling.png)",
        "",
    ]
    rows = []
    for run in cost["scaling"]:
        if "epoch_seconds" not in run:
            rows.append({"cells": run["n_cells"], "result": run.get("error", "failed")})
            continue
        rows.append(
            {
                "cells": run["n_cells"],
                "non-zero share": run["nnz_fraction"],
                "steps timed": run["steps_run"],
                "steps per epoch": run["steps_per_epoch"],
                "median step (ms)": run["median_step_seconds"] * 1000,
                "s per epoch": run["epoch_seconds"],
                "epoch time": "extrapolated" if run["epoch_seconds_extrapolated"] else "measured",
                "RSS after imports (MiB)": run.get("baseline_resident_mib"),
                "RSS with data loaded (MiB)": run["data_resident_mib"],
                "peak RSS (MiB)": run["peak_rss_mib"],
            }
        )
    out += [markdown_table(pd.DataFrame(rows), 2), ""]
    million = next((run for run in cost["scaling"] if run.get("n_cells") == 1_000_000), None)
    if million is not None:
        if "peak_rss_mib" in million and million.get("exit_code") == 0:
            gib = million["peak_rss_mib"] / 1024
            out.append(f"- 1M SYNTHETIC cells × 2,000 genes: peak {gib:.1f} GiB (target: trains within 24 GiB: {'met' if gib < 24 else '**missed**'}); the time per epoch is extrapolated from {million['steps_run']} timed steps plus the measured per-epoch overhead.")
        else:
            out.append(f"- 1M SYNTHETIC cells: {million.get('error', 'failed')} — target **not shown**.")
        out.append("")
    matmul = cost.get("matmul")
    if matmul and "same_shapes_gflops" in matmul:
        measured = next(run for run in cost["scaling"] if run.get("name") == matmul["compared_with"])
        out += [
            "### How close training gets to the machine",
            "",
            markdown_table(
                pd.DataFrame(
                    [
                        {"what": f"scpermut training step ({fmt(measured['n_cells'])} cells run, median step)", "GFLOP/s": measured["achieved_gflops"]},
                        {"what": "plain dense matmuls of the same shapes (forward + both gradients)", "GFLOP/s": matmul["same_shapes_gflops"]},
                        {"what": "one 2048×2048 matmul (practical ceiling)", "GFLOP/s": matmul["square_2048_gflops"]},
                    ]
                ),
                1,
            ),
            "",
            f"The training step reaches {measured['achieved_gflops'] / matmul['same_shapes_gflops']:.0%} of what plain matmuls of its shapes reach on this machine "
            f"(FLOPs counted for dense layers only: {measured['flops_per_step'] / 1e6:.0f} MFLOP per step of {measured['batch_size']} cells). "
            "The rest goes to densifying the sparse mini-batch, batch-norm, dropout, losses, the optimiser and Keras' per-step overhead.",
            "",
        ]
    return out


def _cost_runs(cost: dict | None) -> list[dict]:
    if not cost:
        return []
    return [*cost["compare"].values(), *cost["scaling"], *([cost["matmul"]] if cost.get("matmul") else [])]


def provenance_lines(provenance: dict, processes: list[dict], cost: dict | None) -> list[str]:
    """Which code the page measured, and which results this invocation computed."""
    git, code = provenance["git"], provenance["code"]
    state = "clean" if git["clean"] else "**not clean** (uncommitted: " + ", ".join(f"`{name}`" for name in git["changed"][:10]) + (" …" if len(git["changed"]) > 10 else "") + ")"
    runs = [*processes, *_cost_runs(cost)]
    computed = sum(bool(run.get("computed_now")) for run in runs)
    lines = [
        f"Code: commit `{git['commit']}`, working tree {state}. Fingerprints (SHA-256 of the files): the scpermut modules the benchmark can import `{code['scpermut_package'][:16]}` "
        f"(with `scpermut tune`: `{code['scpermut_tune'][:16]}`), "
        f"benchmark method code `{code['benchmark_methods'][:16]}`, split code `{code['benchmark_splits'][:16]}`.",
        "",
        f"{computed} of {len(runs)} method groups and cost measures were computed by this invocation"
        + (
            "."
            if computed == len(runs)
            else f"; the other {len(runs) - computed} were found in the work folder stored under the same key — the same code fingerprints, "
            "settings, seeds, threads, split definitions and library versions — so they are what this code computes (their wall times are from when they ran)."
        )
        + " A stored result under any other key is deleted and recomputed, never shown.",
    ]
    return lines


def write(docs: Path, profile: dict, splits, scores: pd.DataFrame, processes: list[dict], cost: dict | None, command: str, elapsed_seconds: float, outdir: Path, provenance: dict) -> None:
    img = docs / "img"
    img.mkdir(parents=True, exist_ok=True)
    prefix = "bench_quick_" if profile["name"] == "quick" else "bench_"
    target = docs / "benchmarks.md"
    machine = cost["machine"] if cost else {}
    ok = scores[scores["status"] == "ok"].copy()
    failed = scores[scores["status"] != "ok"]
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} in {elapsed_seconds / 60:.1f} min"
        f" (profile **{profile['name']}**). Every number and plot on this page comes from that run; rerun the command to refresh it.",
        "",
        *provenance_lines(provenance, processes, cost),
        "",
        f"Machine: {machine.get('cpu', platform.processor())}, {os.cpu_count()} cores, {machine.get('memory_gib', '?')} GiB, {platform.platform()}; "
        f"no GPU. Load average when the page was written: {', '.join(f'{x:.1f}' for x in os.getloadavg())} — the machine is shared, so wall times are noisy.",
        "",
        "Versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()) + ".",
        "",
        "## How it is measured",
        "",
        "- **Data**: the real datasets in `shared/data` (raw counts): " + ", ".join(f"`{d}`" for d in profile["datasets"]) + ".",
        "- **Every method sees the same split**: raw counts, a label for reference cells (`Unknown` for the rest) and the batch; it returns a label for every cell (and a latent if it has one).",
        "- **Scores** come from `scpermut.metrics`: balanced accuracy and macro F1 on the scored cells; F1 per type grouped by the type's share of the labelled reference "
        "(rare < 1 %, uncommon 1–10 %, common ≥ 10 %); batch mixing (`batch_entropy`, 1 = neighbourhoods as mixed as the data) and label conservation (`label_silhouette`) of the latent on all cells; "
        "`ilisi`: scib-metrics' `ilisi_knn` scaled 0–1 (90 exact neighbours, perplexity 30; higher = better mixed) for every method with an embedding — `pca_knn`'s embedding is the uncorrected PCA, the baseline to beat.",
        "- **scib-metrics `Benchmarker`** (tasks " + ", ".join(profile["scib_tasks"]) + "): every embedding at the Benchmarker's default metrics (bio: isolated labels, KMeans NMI/ARI, label silhouette, cLISI; "
        "batch: BRAS, iLISI, kBET, graph connectivity, PCR comparison), labels = the truth of every cell, pre-integration embedding = the uncorrected PCA; "
        "`scib_bio`, `scib_batch` and `scib_total` (0.4 batch + 0.6 bio) are its aggregates unscaled (`get_results(min_max_scale=False)`), so a method's score does not depend on which others ran.",
        "- **Methods see** only raw counts, the label they may learn from (Unknown for query and unlabelled cells) and the batch (`common.method_view`); never the truth, the role or the evaluation mask.",
        f"- **Seeds**: every split runs once per seed ({', '.join(map(str, profile['seeds']))}; on the partial atlas the seed also draws the labelled cells). "
        "Tables give mean ± sd over seeds, each seed's score first averaged over the splits of the row; the sd is the seed-to-seed spread (ddof 1).",
        f"- **Verdicts**: {verdict.RULE}.",
        f"- **Threads**: every method and cost measure runs with {profile['threads']} thread(s) (`--threads`); on this shared machine more threads made PyTorch far slower (OpenMP threads spin-waiting for descheduled siblings).",
        "- **Time** is the wall time of fit + predict for one split, measured inside the method's process; **memory** is the peak resident set (`ru_maxrss` from `wait4`) of the process that ran the method on all splits of one task and dataset (imports included: TensorFlow alone holds ~0.5 GiB).",
        "",
        "Settings:",
        "",
    ]
    for name, settings in profile["settings"].items():
        lines.append(f"- `{name}`: {json.dumps(settings) if settings else 'defaults'}")
    lines += [
        "- `scmusketeers`: `sc-musketeers transfer REF.h5ad --class_key bench_label --batch_key batch --unlabeled_category Unknown` (run through its `Workflow`, the code its CLI calls); the three flags are needed because its defaults name columns (`celltype`, `manip`, `UNK`) the data do not have. Its defaults train 20 % of the labelled cells and validate on 80 % (`train_test_split(train_size=0.2)`).",
        "- `scanvi`: scVI pre-training then scANVI on 2,000 batch-aware HVGs (raw counts), CPU; epochs `None` = scvi-tools' own defaults "
        "(its heuristic: 400 scVI epochs below 20,000 cells, then min(10, max(2, round(scVI epochs / 3))) scANVI epochs); the epochs run are in `scores.csv`.",
        "- **Where a peer does not run at its defaults, and why**: CellTypist is trained with its SGD trainer because its default logistic-regression trainer fails with scikit-learn ≥ 1.8; "
        "scMusketeers needs three column-name flags (above). Everything else is each tool's default. In the **quick** profile every trained method runs at cut epochs: those numbers rank nothing.",
        "- `celltypist`: trained on the labelled reference cells (all genes, log1p of counts per 10k) with its SGD trainer. No majority voting (its default).",
        "- `pca_knn` / `harmony_knn`: 2,000 batch-aware HVGs, scaled, 50 PCs (Harmony on them), distance-weighted 15-NN vote of the labelled cells.",
        "- Ablations: " + "; ".join(f"`{k}` = {v}" for k, v in profiles.ABLATIONS.items()) + ". Without its classifier, scpermut's latent is scored by the same 15-NN vote.",
        "",
        "Splits: " + ", ".join(f"{task} {sum(s.task == task for s in splits)}" for task in ("lobo", "partial", "rare", "novel", "batches")) + ".",
        "",
    ]

    process_seconds = sum(record.get("process_seconds", 0) for record in processes)
    process_seconds += sum(run.get("process_seconds", 0) for run in _cost_runs(cost))
    lines += [f"Wall time of all method and cost processes added up: {process_seconds / 60:.0f} min (the runs reused from the cache count with their original time).", ""]

    lines += ["## Targets", ""] + targets(scores) + [""]

    metrics_columns = ["balanced_accuracy", "macro_f1", "batch_entropy", "ilisi", "label_silhouette", *SCIB, "seconds", "peak_rss_mib"]
    lobo = ok[ok["task"] == "lobo"]
    peers = lobo[lobo["method"].isin(profiles.PEERS)]
    if not peers.empty:
        bar_plot(peers, "balanced_accuracy", "dataset", img / f"{prefix}lobo.png", "Leave one batch out", "balanced accuracy (query batch)")
        lines += [f"## {TASK_TITLES['lobo']}", "", "Each held-out batch of the profile in turn is the unlabelled query; mean ± sd over seeds of the score averaged over held-out batches.", "", f"![lobo](img/{prefix}lobo.png)", ""]
        lines += [markdown_table(summary_table(peers, metrics_columns, ["dataset", "method"])), ""]
        per_split = summary_table(peers, ["balanced_accuracy", "ilisi", "scib_total"], ["dataset", "setting", "method"]).drop(columns="splits")
        lines += ["<details><summary>Per held-out batch (mean ± sd over seeds)</summary>", "", markdown_table(per_split.rename(columns={"setting": "query batch"})), "", "</details>", ""]
        by_rarity = [c for c in peers.columns if c.startswith("f1 ")]
        if by_rarity:
            lines += ["F1 by reference rarity (mean ± sd over seeds):", "", markdown_table(summary_table(peers, by_rarity, ["method"])), ""]

    partial = ok[ok["task"] == "partial"]
    if not partial.empty:
        partial_plot(partial, img / f"{prefix}partial.png")
        partial = partial.assign(labelled=partial["split"].str.split("pct").str[0] + " %")
        lines += [f"## {TASK_TITLES['partial']}", "", "All batches together; a seeded share of each type labelled; scored on the unlabelled cells (mean ± sd over seeds).", "", f"![partial](img/{prefix}partial.png)", ""]
        lines += [markdown_table(summary_table(partial, ["balanced_accuracy", "macro_f1", "batch_entropy", "ilisi", "seconds"], ["labelled", "method"])), ""]

    rare = ok[ok["task"] == "rare"]
    if not rare.empty:
        bar_plot(rare.assign(type=rare["rare_type"]), "rare_type_f1", "type", img / f"{prefix}rare.png", "Rare type: F1 of the type cut to ~1 % of the reference", "F1 of the rare type (query batch)")
        lines += [f"## {TASK_TITLES['rare']}", "", "One type is cut (seeded) to ~1 % of the labelled reference; the batch holding most of that type is the query. Scored: that type's F1 and recall on the query, and balanced accuracy over all types.", "", f"![rare](img/{prefix}rare.png)", ""]
        lines += [markdown_table(summary_table(rare, ["rare_type_f1", "rare_type_recall", "balanced_accuracy"], ["method"])), ""]
        per_type = rare.pivot_table(index="rare_type", columns="method", values="rare_type_f1", aggfunc="mean")
        per_type = per_type[method_order(per_type.columns)].reset_index()
        lines += ["Rare-type F1 per type:", "", markdown_table(per_type), ""]

    ablation = ok[(ok["task"] == "lobo") & ok["method"].isin(["scpermut", *profiles.ABLATIONS]) & ok["dataset"].isin(profile["ablation_datasets"]) & ok["split"].isin(profile["ablation_batches"])]
    if ablation["method"].nunique() > 1:
        bar_plot(ablation, "balanced_accuracy", "dataset", img / f"{prefix}ablation.png", "Ablation (leave one batch out)", "balanced accuracy (query batch)")
        lines += [f"## {TASK_TITLES['ablation']}", "", f"![ablation](img/{prefix}ablation.png)", ""]
        lines += [markdown_table(summary_table(ablation, ["balanced_accuracy", "macro_f1", "batch_entropy", "ilisi", "label_silhouette", "seconds"], ["dataset", "method"])), ""]

    lines += novel_section(ok, img, prefix)
    lines += atlas_section(ok, splits)
    lines += tuned_section(ok, profile)

    if cost:
        scaling_plot(cost["scaling"], img / f"{prefix}scaling.png")
        lines += [line.replace("img/bench_scaling.png", f"img/{prefix}scaling.png") for line in cost_section(cost, img)]

    if not failed.empty:
        lines += ["## Runs that failed", "", markdown_table(failed[["task", "dataset", "split", "method", "status"]]), ""]
    lines += [
        "## Reproduce",
        "",
        "```bash",
        "bash benchmarks/setup.sh            # builds the peers' venv (/work/bench-venv by default)",
        f"/work/bench-venv/bin/{command}",
        "```",
        "",
        f"Raw results (scores per split, logs, per-run JSON) are written to `{outdir.relative_to(outdir.parents[2]) if len(outdir.parents) > 2 else outdir}`.",
        "",
    ]
    target.write_text("\n".join(lines))
