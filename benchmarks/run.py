"""Benchmark scpermut against its peers; write docs/benchmarks.md and its plots.

Run from the repository root, with the peers' environment (benchmarks/setup.sh):

    /work/bench-venv/bin/python benchmarks/run.py            # everything (hours: see benchmarks/README.md)
    /work/bench-venv/bin/python benchmarks/run.py --profile standard   # fewer splits, same defaults and seeds
    /work/bench-venv/bin/python benchmarks/run.py --quick    # the same pipeline, small

Each method runs on each split, once per seed, in a process of its own method group, so wall
time and peak memory are those of that method alone. A result under ``--outdir`` is reused
only when it was stored under the key the code at hand computes (``cache.py``: code
fingerprints, full settings, seeds, threads, split definitions, library versions); any other
is deleted and recomputed. Scores, tables and plots are always rebuilt.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import cache  # noqa: E402
import profiles  # noqa: E402
import tasks  # noqa: E402
from common import run_job, run_name  # noqa: E402


def method_entries(profile: dict) -> dict[str, tuple[str, dict]]:
    """Name shown in the results -> (method function, settings), ablation variants included."""
    entries = {name: (name, profile["settings"][name]) for name in profiles.PEERS}
    base = profile["settings"]["scpermut"]["options"]
    for name, change in profiles.ABLATIONS.items():
        entries[name] = ("scpermut", {"options": {**base, **change}})
    for name, search in profiles.TUNED.items():
        entries[name] = ("scpermut", {"options": base, "tune": search})
    for name, change in profile.get("variants", {}).items():
        entries[name] = ("scpermut", {"options": {**base, **change}})
    return entries


def entries_for(split: tasks.Split, profile: dict) -> list[str]:
    """The shown names that run on ``split``: the peers (+ ablations, tuned), or only the variants of a defaults search."""
    if "variants" in profile:
        return list(profile["variants"])
    names = list(profiles.PEERS)
    if split.task == "lobo" and "ablation" in profile["tasks"] and split.dataset in profile["ablation_datasets"] and split.name in profile["ablation_batches"]:
        names += list(profiles.ABLATIONS)
    if split.task == "lobo" and split.dataset in profile.get("tuned_datasets", ()):
        names += list(profiles.TUNED)
    return names


def write_splits(splits: list[tasks.Split], folder: Path, code: dict) -> tuple[dict[str, Path], dict[str, dict]]:
    """Write each split's AnnData (again when its key changed); return split id -> file and split id -> key."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, keys, loaded, digests = {}, {}, {}, {}
    for split in splits:
        dataset = tasks.DATASETS[split.dataset]
        if split.dataset not in digests:
            digests[split.dataset] = dataset.digest()
        key = cache.split_key(split.fields(), digests[split.dataset], code)
        path, key_file = folder / f"{split.id}.h5ad", folder / f"{split.id}.key.json"
        current = path.is_file() and key_file.is_file() and json.loads(key_file.read_text()).get("digest") == cache.key_digest(key)
        if not current:
            if split.dataset not in loaded:
                loaded[split.dataset] = dataset.load()
            adata = tasks.build(split, loaded[split.dataset])
            key_file.unlink(missing_ok=True)
            adata.write_h5ad(path)
            key_file.write_text(json.dumps({"digest": cache.key_digest(key), "key": key}, indent=2, sort_keys=True))
        paths[split.id], keys[split.id] = path, key
    return paths, keys


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def group_runs(splits, profile) -> dict[tuple[str, str, str], list[tasks.Split]]:
    """(shown name, task, dataset) -> its splits: each group runs in one process."""
    groups: dict[tuple[str, str, str], list[tasks.Split]] = {}
    for split in splits:
        for name in entries_for(split, profile):
            groups.setdefault((name, split.task, split.dataset), []).append(split)
    return groups


def group_folder(outdir: Path, name: str, task: str, dataset: str) -> Path:
    return outdir / "runs" / slug(name) / f"{task}__{dataset}"


def run_methods(splits, paths, split_keys, profile, outdir: Path, code: dict, versions: dict, only=None) -> list[dict]:
    """Run every method group whose stored result is not current; return one record per group.

    A record says whether this invocation computed the group (``computed_now``) or found it
    stored under the same key; a stale group is deleted before it runs again. ``only``: the
    shown method names to run (the others are skipped and get no record).
    """
    entries = method_entries(profile)
    records = []
    for (name, task, dataset), members in group_runs(splits, profile).items():
        if only is not None and name not in only:
            continue
        function, settings = entries[name]
        group_dir = group_folder(outdir, name, task, dataset)
        runs = [(s, seed) for s in members for seed in s.run_seeds]
        key = cache.run_key(function, settings, [seed for _, seed in runs], [split_keys[s.id] for s in members], profile["threads"], code, versions)
        expected = ["process.json"] + [f"{run_name(s.id, seed)}.{ext}" for s, seed in runs for ext in ("npz", "json")]
        if cache.is_current(group_dir, key, expected):
            records.append({**json.loads((group_dir / "process.json").read_text()), "computed_now": False, "key": cache.key_digest(key)})
            continue
        old = cache.stored_key(group_dir)
        if cache.clear_stale(group_dir):
            changed = cache.key_differences(old, key) if old else ["unfinished or unkeyed"]
            print(f"  stale result of {name} on {task}/{dataset} deleted (changed: {', '.join(changed[:6])})", flush=True)
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {task} on {dataset} ({len(members)} splits x seeds {sorted({seed for _, seed in runs})})", flush=True)
        job = {"method": function, "settings": settings, "runs": [[str(paths[s.id]), seed] for s, seed in runs], "out": str(group_dir)}
        result = run_job(job, group_dir / "job.json", group_dir / "log.txt", profile["threads"])
        record = {"method": name, "task": task, "dataset": dataset, "n_splits": len(members), "n_runs": len(runs), **result}
        if result["exit_code"] != 0:
            print(f"  failed (exit {result['exit_code']}); see {group_dir / 'log.txt'}", flush=True)
        else:
            print(f"  {result['process_seconds']} s, peak {result['peak_rss_mib']} MiB", flush=True)
        group_dir.mkdir(parents=True, exist_ok=True)
        (group_dir / "process.json").write_text(json.dumps(record, indent=2))
        if result["exit_code"] == 0 and all((group_dir / name_).is_file() for name_ in expected):
            cache.mark_current(group_dir, key)  # last: only a finished group is ever reused
        records.append({**record, "computed_now": True, "key": cache.key_digest(key)})
    return records


def score_all(splits, paths, split_keys, profile, outdir: Path, records: list[dict]):
    """One row per (split, seed, method): scores, seconds, and the peak memory of its process.

    Only groups of ``records`` (current under this invocation's keys) are read. On the novel
    task each method of ``profiles.REJECTION_RULES`` gets a second row, its answers rejected
    by that rule. On ``profile["scib_tasks"]`` every embedding gets scib-metrics' Benchmarker
    aggregates (cached by content under ``outdir/scib``).
    """
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scoring import benchmarker_scores, rejected_below, score

    processes = {(r["method"], r["task"], r["dataset"]): r for r in records}
    rows = []
    for split in splits:
        adata = ad.read_h5ad(paths[split.id])
        for seed in split.run_seeds:
            latents, first = {}, len(rows)
            for name in entries_for(split, profile):
                group_dir = group_folder(outdir, name, split.task, split.dataset)
                process = processes[(name, split.task, split.dataset)]
                stem = run_name(split.id, seed)
                result_file, timing_file = group_dir / f"{stem}.npz", group_dir / f"{stem}.json"
                row = {"task": split.task, "dataset": split.dataset, "split": split.name, "setting": split.setting, "seed": seed, "method": name}
                if process.get("exit_code") != 0 or not result_file.exists():
                    rows.append({**row, "status": f"failed (exit {process.get('exit_code')})"})
                    continue
                arrays = np.load(result_file)
                latent, novelty = (arrays[key] if key in arrays else None for key in ("latent", "novelty"))
                timing = json.loads(timing_file.read_text())
                row.update(status="ok", seconds=timing["seconds"], peak_rss_mib=process.get("peak_rss_mib"), settings=json.dumps(timing["settings"], default=str))
                rows.append({**row, **score(adata, arrays["labels"], latent, novelty)})
                if latent is not None:
                    latents[name] = latent
                if split.task == "novel" and name in profiles.REJECTION_RULES and novelty is not None:
                    threshold = profiles.REJECTION_RULES[name]
                    rejected = rejected_below(arrays["labels"], novelty, threshold)
                    rows.append({**row, "method": profiles.rejection_name(name), **score(adata, rejected, None, novelty)})
            if split.task in profile["scib_tasks"] and latents:
                aggregates = benchmarker_scores(adata, latents, cache.key_digest(split_keys[split.id]), outdir / "scib")
                for row in rows[first:]:
                    row.update(aggregates.get(row["method"], {}))
    return pd.DataFrame(rows)


def git_state(repo: Path = HERE.parent) -> dict:
    """The commit at hand and whether the tree differs from it (untracked files included)."""
    import subprocess

    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False).stdout

    # Porcelain lines are "XY path": the status columns may be blank, so the text is not stripped first.
    changed = [line[3:] for line in git("status", "--porcelain", "--untracked-files=normal").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "HEAD").strip() or "unknown", "clean": not changed, "changed": changed}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", choices=sorted(profiles.PROFILES), default="full", help="What the run covers (profiles.py): full (hours), standard (fewer splits, same defaults and seeds) or quick.")
    parser.add_argument("--quick", action="store_true", help="Same as --profile quick: short epochs, checks the machinery, not the methods.")
    parser.add_argument("--only", default=None, help="Comma-separated method names (as shown on the page) and/or `cost`: compute and store only those, write no page (fills the work folder, e.g. one process per core).")
    parser.add_argument("--outdir", type=Path, default=None, help="Work folder (default: benchmarks/results/<profile>).")
    parser.add_argument("--docs", type=Path, default=None, help="Where benchmarks.md and img/ go (default: docs/, or the work folder with --quick).")
    parser.add_argument("--threads", type=int, default=1, help="Threads per method process (1: robust on a shared machine).")
    parser.add_argument("--skip_cost", "--skip-cost", action="store_true", help="Leave out throughput, scaling and GFLOP/s.")
    parser.add_argument("--fresh", action="store_true", help="Delete every stored result first: all runs are computed by this invocation.")
    parser.add_argument("--allow_dirty", "--allow-dirty", action="store_true", help="Write the page into the repository's docs/ even when the tree has uncommitted changes.")
    parser.add_argument("--plan", action="store_true", help="Print the runs each method would make, and stop.")
    parser.add_argument("--seeds", default=None, help="Comma-separated seeds replacing the profile's (e.g. one seed per work folder).")
    args = parser.parse_args(argv)

    profile = {**profiles.PROFILES["quick" if args.quick else args.profile], "threads": args.threads}
    if args.seeds is not None:
        profile["seeds"] = [int(seed) for seed in args.seeds.split(",")]
    outdir = args.outdir or HERE / "results" / profile["name"]
    docs = args.docs or (outdir if profile["name"] == "quick" else HERE.parent / "docs")
    only = None if args.only is None else [name.strip() for name in args.only.split(",") if name.strip()]
    if only is not None:
        unknown = sorted(set(only) - set(method_entries(profile)) - {"cost"})
        if unknown:
            raise SystemExit(f"--only: unknown name(s) {', '.join(unknown)}; known: cost, {', '.join(method_entries(profile))}")
    command = "python benchmarks/run.py" + (" " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])) if (argv or sys.argv[1:]) else "")
    started = time.time()

    splits = tasks.plan(profile)
    if args.plan:
        for (name, task, dataset), members in group_runs(splits, profile).items():
            print(f"{name:40s} {task:8s} {dataset:16s} {sum(len(s.run_seeds) for s in members):3d} runs")
        return
    # The page must say which code it measured: the commit, and whether the tree differed from it.
    state = git_state()
    if only is None and docs.resolve() == (HERE.parent / "docs").resolve() and not state["clean"] and not args.allow_dirty:
        raise SystemExit(
            "the tree has uncommitted changes (" + ", ".join(state["changed"][:5]) + "): commit them so that the page "
            "names the code it measured, or pass --allow_dirty (the page then says the tree was not clean)."
        )
    import report

    code = cache.code_fingerprints(cache.package_folder())
    versions = report.versions()
    if args.fresh:
        for folder in (outdir / "runs", outdir / "cost"):
            cache.clear_stale(folder)
    outdir.mkdir(parents=True, exist_ok=True)

    paths, split_keys = write_splits(splits, outdir / "splits", code)
    print(f"{len(splits)} splits; running methods", flush=True)
    processes = run_methods(splits, paths, split_keys, profile, outdir, code, versions, only)
    measure_cost = "cost" in only if only is not None else not args.skip_cost
    cost_results = None
    if measure_cost:
        import cost

        cost_results = cost.run_all(profile["cost"], outdir / "cost", args.threads, code=code, versions=versions)
    if only is not None:
        print(f"stored {', '.join(only)} in {outdir}; a run without --only scores them and writes the page", flush=True)
        return
    scores = score_all(splits, paths, split_keys, profile, outdir, processes)
    scores.to_csv(outdir / "scores.csv", index=False)

    report.write(
        docs=docs,
        profile=profile,
        splits=splits,
        scores=scores,
        processes=processes,
        cost=cost_results,
        command=command,
        elapsed_seconds=time.time() - started,
        outdir=outdir,
        provenance={"git": state, "code": code},
    )
    print(f"wrote {docs / 'benchmarks.md'} in {(time.time() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
