"""Training throughput (cells x epochs per second) and peak memory of ``scpermut train``.

Not a test: a command that states its data size and prints one JSON record.

    python benchmarks/bench_training.py --cells 20000 --genes 2000 --epochs 6

The cells are SYNTHETIC (for time and memory only, never accuracy): ``--types`` cell types
with their own gene profiles, ``--batches`` batches with a multiplicative shift, Poisson counts
at about ``--density`` non-zero entries, log-normalised like ``scpermut prepare`` does, 60 %
labelled training cells, 15 % validation, 25 % query. Training runs the default network with
every module on, epochs split across the three phases and no early stopping, so every epoch
counts. Memory is the process's resident set: its peak, and its value after each epoch
(which must not grow with epochs: mini-batches are densified one at a time).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp


def synthetic_prepared(
    n_cells: int, n_genes: int, n_types: int, n_batches: int, density: float, seed: int
) -> ad.AnnData:
    """A ``prepared.h5ad``-shaped AnnData of synthetic cells; every gene is highly variable."""
    rng = np.random.default_rng(seed)
    types = rng.integers(0, n_types, n_cells)
    batches = rng.integers(0, n_batches, n_cells)
    # Sparse gene programmes: each type expresses a random subset of genes.
    profiles = rng.gamma(1.0, 1.0, (n_types, n_genes)) * (
        rng.random((n_types, n_genes)) < density * 2
    )
    shifts = rng.lognormal(0.0, 0.3, (n_batches, n_genes))
    rows = []
    for start in range(0, n_cells, 5000):
        block = slice(start, min(start + 5000, n_cells))
        rows.append(
            sp.csr_matrix(
                rng.poisson(profiles[types[block]] * shifts[batches[block]]).astype(np.float32)
            )
        )
    counts = sp.vstack(rows, format="csr")
    totals = np.asarray(counts.sum(axis=1)).ravel()
    expression = sp.csr_matrix(sp.diags((1e4 / np.maximum(totals, 1)).astype(np.float32)) @ counts)
    np.log1p(expression.data, out=expression.data)
    split = rng.choice(["train", "validation", "query"], size=n_cells, p=[0.6, 0.15, 0.25])
    obs = pd.DataFrame(
        {
            "cell_type": [f"type{t}" for t in types],
            "batch": [f"batch{b}" for b in batches],
            "scpermut_split": split,
        },
        index=[f"cell{i}" for i in range(n_cells)],
    ).astype("category")
    var = pd.DataFrame({"highly_variable": True}, index=[f"gene{j}" for j in range(n_genes)])
    adata = ad.AnnData(X=expression, obs=obs, var=var, layers={"counts": counts})
    adata.uns["scpermut_prepare"] = {
        "class_key": "cell_type",
        "batch_key": "batch",
        "unlabeled_category": "Unknown",
        "target_sum": 1e4,
    }
    return adata


def resident_mib() -> float:
    """Current resident set size of this process, in MiB."""
    with open(f"/proc/{os.getpid()}/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=20000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--types", type=int, default=10)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument(
        "--density", type=float, default=0.1, help="Rough share of non-zero counts."
    )
    parser.add_argument(
        "--epochs",
        type=int,
        default=6,
        help="Total epochs, split evenly over warm-up, full and fine-tune.",
    )
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--reconstruction", choices=["mse", "nb"], default="mse")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import keras

    from scpermut.model.api import Model
    from scpermut.model.train import select_device

    device = select_device("auto", mixed_precision=False)
    adata = synthetic_prepared(
        args.cells, args.genes, args.types, args.batches, args.density, args.seed
    )
    memory_after_data = resident_mib()
    per_phase = max(args.epochs // 3, 1)
    epochs = {
        "epochs_warmup": per_phase,
        "epochs_full": per_phase,
        "epochs_finetune": max(args.epochs - 2 * per_phase, 1),
    }
    epoch_memory: list[float] = []
    epoch_end = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch_memory.append(round(resident_mib(), 1))
    )
    started = time.perf_counter()
    model = Model(
        seed=args.seed,
        batch_size=args.batch_size,
        patience=10**6,
        reconstruction=args.reconstruction,
        **epochs,
    )
    model.fit(adata, callbacks=[epoch_end])
    seconds = time.perf_counter() - started
    run = model.record.run
    # The fine-tune phase feeds only the labelled training cells.
    n_train = run["n_labelled_train"]
    cell_epochs = (
        args.cells * (epochs["epochs_warmup"] + epochs["epochs_full"])
        + n_train * epochs["epochs_finetune"]
    )
    result = {
        "data": {
            "cells": args.cells,
            "genes": args.genes,
            "non_zero_share": round(adata.X.nnz / (args.cells * args.genes), 3),
            "types": args.types,
            "batches": args.batches,
        },
        "device": device,
        "threads": os.cpu_count(),
        "epochs": epochs,
        "batch_size": args.batch_size,
        "reconstruction": args.reconstruction,
        "seconds": round(seconds, 1),
        "cell_epochs": cell_epochs,
        "cell_epochs_per_second": round(cell_epochs / seconds, 1),
        "memory_mib": {
            "after_data": round(memory_after_data, 1),
            "after_each_epoch": epoch_memory,
            "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "versions": {
            key: run["versions"][key]
            for key in ("scpermut", "tensorflow", "keras")
            if key in run["versions"]
        },
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
