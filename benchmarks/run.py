"""Benchmark scpermut against its peers; write docs/benchmarks.md and its plots.

Run from the repository root, with the peers' environment (benchmarks/setup.sh):

    /work/bench-venv/bin/python benchmarks/run.py            # everything (~45 min on 2 cores)
    /work/bench-venv/bin/python benchmarks/run.py --quick    # the same pipeline, small (a few minutes)

Each method runs on each split in a process of its own method group, so wall time and peak
memory are those of that method alone. Results already computed under ``--outdir`` are
reused (delete the folder to start over); scores, tables and plots are always rebuilt.
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

import profiles  # noqa: E402
import tasks  # noqa: E402
from common import run_job  # noqa: E402


def method_entries(profile: dict) -> dict[str, tuple[str, dict]]:
    """Name shown in the results -> (method function, settings), ablation variants included."""
    entries = {name: (name, profile["settings"][name]) for name in profiles.PEERS}
    base = profile["settings"]["scpermut"]["options"]
    for name, change in profiles.ABLATIONS.items():
        entries[name] = ("scpermut", {"options": {**base, **change}})
    return entries


def entries_for(split: tasks.Split, profile: dict) -> list[str]:
    names = list(profiles.PEERS)
    if split.task == "lobo" and "ablation" in profile["tasks"] and split.dataset in profile["ablation_datasets"] and split.name in profile["ablation_batches"]:
        names += list(profiles.ABLATIONS)
    return names


def write_splits(splits: list[tasks.Split], folder: Path) -> dict[str, Path]:
    """Write each split's AnnData once; return split id -> file."""
    folder.mkdir(parents=True, exist_ok=True)
    paths, loaded = {}, {}
    for split in splits:
        path = folder / f"{split.id}.h5ad"
        if not path.exists():
            if split.dataset not in loaded:
                loaded[split.dataset] = tasks.DATASETS[split.dataset].load()
            adata = tasks.build(split, loaded[split.dataset])
            adata.uns["bench_seed"] = split.seed
            adata.write_h5ad(path)
        paths[split.id] = path
    return paths


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name).strip("_")


def run_methods(splits, paths, profile, outdir: Path) -> list[dict]:
    """Run every method group (one process per method x task x dataset) not already done."""
    entries = method_entries(profile)
    groups: dict[tuple[str, str, str], list[tasks.Split]] = {}
    for split in splits:
        for name in entries_for(split, profile):
            groups.setdefault((name, split.task, split.dataset), []).append(split)
    records = []
    for (name, task, dataset), members in groups.items():
        function, settings = entries[name]
        group_dir = outdir / "runs" / slug(name) / f"{task}__{dataset}"
        record_file = group_dir / "process.json"
        if record_file.exists() and all((group_dir / f"{s.id}.npz").exists() for s in members):
            records.append(json.loads(record_file.read_text()))
            continue
        print(f"[{time.strftime('%H:%M:%S')}] {name}: {task} on {dataset} ({len(members)} splits)", flush=True)
        job = {"method": function, "settings": settings, "splits": [str(paths[s.id]) for s in members], "out": str(group_dir)}
        result = run_job(job, group_dir / "job.json", group_dir / "log.txt", profile["threads"])
        record = {"method": name, "task": task, "dataset": dataset, "n_splits": len(members), **result}
        if result["exit_code"] != 0:
            print(f"  failed (exit {result['exit_code']}); see {group_dir / 'log.txt'}", flush=True)
        else:
            print(f"  {result['process_seconds']} s, peak {result['peak_rss_mib']} MiB", flush=True)
        record_file.write_text(json.dumps(record, indent=2))
        records.append(record)
    return records


def score_all(splits, paths, profile, outdir: Path):
    """One row per (split, method): scores, seconds, and the peak memory of its process."""
    import anndata as ad
    import numpy as np
    import pandas as pd
    from scoring import score

    rows = []
    for split in splits:
        adata = ad.read_h5ad(paths[split.id])
        for name in entries_for(split, profile):
            group_dir = outdir / "runs" / slug(name) / f"{split.task}__{split.dataset}"
            result_file, timing_file = group_dir / f"{split.id}.npz", group_dir / f"{split.id}.json"
            process = json.loads((group_dir / "process.json").read_text()) if (group_dir / "process.json").exists() else {}
            row = {"task": split.task, "dataset": split.dataset, "split": split.name, "seed": split.seed, "method": name}
            if not result_file.exists():
                rows.append({**row, "status": f"failed (exit {process.get('exit_code')})"})
                continue
            arrays = np.load(result_file)
            timing = json.loads(timing_file.read_text())
            row.update(score(adata, arrays["labels"], arrays["latent"] if "latent" in arrays else None))
            row.update(status="ok", seconds=timing["seconds"], peak_rss_mib=process.get("peak_rss_mib"), settings=json.dumps(timing["settings"], default=str))
            rows.append(row)
    return pd.DataFrame(rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="Small version of every task and cost measure (a few minutes).")
    parser.add_argument("--outdir", type=Path, default=None, help="Work folder (default: benchmarks/results/<profile>).")
    parser.add_argument("--docs", type=Path, default=None, help="Where benchmarks.md and img/ go (default: docs/, or the work folder with --quick).")
    parser.add_argument("--threads", type=int, default=1, help="Threads per method process (1: robust on a shared machine).")
    parser.add_argument("--skip_cost", "--skip-cost", action="store_true", help="Leave out throughput, scaling and GFLOP/s.")
    args = parser.parse_args(argv)

    profile = {**(profiles.QUICK if args.quick else profiles.FULL), "threads": args.threads}
    outdir = args.outdir or HERE / "results" / profile["name"]
    outdir.mkdir(parents=True, exist_ok=True)
    docs = args.docs or (outdir if args.quick else HERE.parent / "docs")
    command = "python benchmarks/run.py" + (" " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])) if (argv or sys.argv[1:]) else "")
    started = time.time()

    splits = tasks.plan(profile)
    paths = write_splits(splits, outdir / "splits")
    print(f"{len(splits)} splits; running methods", flush=True)
    processes = run_methods(splits, paths, profile, outdir)
    scores = score_all(splits, paths, profile, outdir)
    scores.to_csv(outdir / "scores.csv", index=False)

    cost_results = None
    if not args.skip_cost:
        import cost

        cost_results = cost.run_all(profile["cost"], outdir / "cost", args.threads)

    import report

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
    )
    print(f"wrote {docs / 'benchmarks.md'} in {(time.time() - started) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
