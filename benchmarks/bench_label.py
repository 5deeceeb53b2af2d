"""Time to a first result: ``scpermut label`` against ``sc-musketeers transfer`` on the same atlas.

    python benchmarks/bench_label.py [--runs 3] [--scpermut CMD] [--musketeers CMD]

The atlas is the shipped Kang PBMC set (1,556 cells x 1,267 genes, 4 batches) with the labels of
~30 % of the cells (seeded) replaced by ``Unknown``: both tools annotate those. Each tool runs as
its user would start it, a whole process with its imports, alternately A B A B so that drifting
load hits both; wall and CPU (user + sys of the child) are printed per run, then medians and the
wall-time ratio. ``--musketeers`` defaults to the ``sc-musketeers`` next to this Python (the peers'
venv, ``benchmarks/setup.sh``); ``--scpermut`` to the ``scpermut`` on PATH.
"""

from __future__ import annotations

import argparse
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "muscat_kang_pbmc.h5ad"
UNKNOWN_FRACTION = 0.3


def make_atlas(source: Path, target: Path, seed: int = 0) -> None:
    import anndata as ad
    import numpy as np

    adata = ad.read_h5ad(source)
    labels = adata.obs["cell_type"].astype(str).to_numpy()
    hidden = np.random.default_rng(seed).random(adata.n_obs) < UNKNOWN_FRACTION
    labels[hidden] = "Unknown"
    adata.obs["cell_type"] = labels
    adata.obs = adata.obs[["cell_type", "batch"]].astype(str)
    adata.write_h5ad(target)


def timed(command: list[str]) -> tuple[float, float, int]:
    """Wall seconds, CPU seconds (user + sys) and exit code of one whole process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    code = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), code


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--scpermut", default="scpermut")
    parser.add_argument("--musketeers", default=str(Path(sys.executable).parent / "sc-musketeers"))
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        atlas = folder / "atlas.h5ad"
        make_atlas(args.data, atlas)
        commands = {
            "scpermut label": [*shlex.split(args.scpermut), "-q", "label", str(atlas), "--class_key", "cell_type",
                               "--batch_key", "batch", "--outdir", str(folder / "scpermut"), "--overwrite"],
            "sc-musketeers transfer": [*shlex.split(args.musketeers), "transfer", str(atlas), "--class_key", "cell_type",
                                       "--batch_key", "batch", "--unlabeled_category", "Unknown", "--out_dir", str(folder / "musk")],
        }
        results = {name: [] for name in commands}
        for run in range(args.runs):
            for name, command in commands.items():
                shutil.rmtree(folder / "musk", ignore_errors=True)
                (folder / "musk").mkdir()
                wall, cpu, code = timed(command)
                results[name].append((wall, cpu))
                print(f"run {run + 1} {name}: wall {wall:.1f} s, cpu {cpu:.1f} s, exit {code}", flush=True)
                if code != 0:
                    sys.exit(f"{name} failed (exit {code}): {shlex.join(command)}")
        for name, rows in results.items():
            walls, cpus = zip(*rows)
            print(f"{name}: median wall {statistics.median(walls):.1f} s (min {min(walls):.1f}, max {max(walls):.1f}), "
                  f"median cpu {statistics.median(cpus):.1f} s")
        ratios = [a[0] / b[0] for a, b in zip(*results.values())]
        print(f"wall ratio scpermut / sc-musketeers, pair by pair: median {statistics.median(ratios):.2f} "
              f"(min {min(ratios):.2f}, max {max(ratios):.2f})")


if __name__ == "__main__":
    main()
