"""Scaling on SYNTHETIC cells: peak memory and time of ``scpermut train`` and ``scpermut label``.

    python benchmarks/scaling.py write 100000 /tmp/scaling     # prepared_100000.h5ad, atlas_100000.h5ad
    python benchmarks/scaling.py train /tmp/scaling/prepared_100000.h5ad --epochs 2
    python benchmarks/scaling.py tile /tmp/scaling/prepared_1000000.h5ad 10 /tmp/scaling/tiled_10000000.h5ad
    python benchmarks/scaling.py train /tmp/scaling/tiled_10000000.h5ad --epochs 1 --options '{"data_access": "disk"}'
    /usr/bin/time -v scpermut label /tmp/scaling/atlas_100000.h5ad --outdir /tmp/scaling/label_100000

The cells are SYNTHETIC (``synthetic.py``: real cells resampled with count noise, 2,000 genes,
~18 % non-zero), for time and memory only, never accuracy. ``write`` builds both files block by
block (never the whole matrix in memory): ``prepared_<n>.h5ad`` shaped as ``scpermut prepare``
writes it (log-normalised ``X``, raw counts in ``layers["counts"]``, every gene highly variable,
the split), and ``atlas_<n>.h5ad`` with raw counts and 20 % of the labels hidden, for ``scpermut
label``. ``train`` runs ``scpermut train``'s own code (``steps.train.train_file``: the file read,
the model folder written) on the full phase at the defaults and prints one JSON record: peak
resident memory (``ru_maxrss``), seconds per epoch (validation and pseudo-labels included),
cells x epochs per second. ``tile`` writes a file of a prepared file's cells repeated: its ``X``
values and column indices are HDF5 virtual datasets over the source's (only the row pointers
and the tables are written), so a 10M-cell file takes a few hundred MB of disk beside the 1M one;
its reads are the source's, which the page cache may hold.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import synthetic  # noqa: E402

CHUNK = 50_000


def write(n_cells: int, folder: Path, seed: int = 0) -> None:
    """Write ``prepared_<n>.h5ad`` and ``atlas_<n>.h5ad`` of ``n_cells`` SYNTHETIC cells, block by block."""
    import h5py
    import pandas as pd
    from anndata.io import sparse_dataset, write_elem

    from scpermut import constants
    from scpermut.keys import Keys

    keys = Keys()
    folder.mkdir(parents=True, exist_ok=True)
    prepared = h5py.File(folder / f"prepared_{n_cells}.h5ad", "w")
    atlas = h5py.File(folder / f"atlas_{n_cells}.h5ad", "w")
    genes, drawn = synthetic.blocks(n_cells, seed, CHUNK)
    labels, batches = [], []
    for index, (counts, truth, batch) in enumerate(drawn):
        expression = counts.copy()
        totals = np.asarray(expression.sum(axis=1)).ravel()
        expression.data *= np.repeat(1e4 / np.maximum(totals, 1), np.diff(expression.indptr)).astype(np.float32)
        np.log1p(expression.data, out=expression.data)
        if index == 0:
            write_elem(prepared, "layers", {})
        for group, name, matrix in ((prepared, "X", expression), (prepared["layers"], constants.COUNTS_LAYER, counts), (atlas, "X", counts)):
            if index == 0:
                write_elem(group, name, matrix)  # resizable: later blocks are appended
            else:
                sparse_dataset(group[name]).append(matrix)
        labels.append(truth)
        batches.append(batch)
    labels, batches = np.concatenate(labels), np.concatenate(batches)
    draw = np.random.default_rng(seed + 1).random(n_cells)
    split = np.where(
        draw < synthetic.LABELLED_SHARE * (1 - synthetic.VALIDATION_SHARE),
        constants.SPLIT_TRAIN,
        np.where(draw < synthetic.LABELLED_SHARE, constants.SPLIT_VALIDATION, constants.SPLIT_UNLABELLED),
    )
    hidden = np.where(split == constants.SPLIT_UNLABELLED, keys.unlabeled_category, labels)
    names = pd.Index([f"synthetic_{i}" for i in range(n_cells)])
    observed = {keys.class_key: pd.Categorical(hidden), keys.batch_key: pd.Categorical(batches)}
    tables = {
        prepared: (
            pd.DataFrame({**observed, constants.SPLIT: pd.Categorical(split, categories=list(constants.SPLITS))}, index=names),
            pd.DataFrame({"highly_variable": True}, index=pd.Index(genes)),
            {constants.PREPARE_UNS: {**keys.to_dict(), "target_sum": 1e4, "n_top_genes": synthetic.N_GENES}},
        ),
        atlas: (pd.DataFrame(observed, index=names), pd.DataFrame(index=pd.Index(genes)), {}),
    }
    for handle, (obs, var, uns) in tables.items():
        write_elem(handle, "obs", obs)
        write_elem(handle, "var", var)
        write_elem(handle, "uns", uns)
        handle.attrs.update({"encoding-type": "anndata", "encoding-version": "0.1.0"})
        handle.close()


def tile(prepared: Path, times: int, out: Path) -> None:
    """Write ``out``: the cells of ``prepared`` ``times`` over (``X`` only, no counts layer), its
    values and column indices virtual datasets mapping onto ``prepared``'s."""
    import h5py
    import pandas as pd
    from anndata.io import read_elem, write_elem

    source_path = str(prepared.resolve())
    with h5py.File(prepared, "r") as source, h5py.File(out, "w") as target:
        matrix = source["X"]
        n_rows, n_genes = (int(size) for size in matrix.attrs["shape"])
        n_values = matrix["data"].shape[0]
        group = target.create_group("X")
        group.attrs.update(dict(matrix.attrs))
        group.attrs["shape"] = (n_rows * times, n_genes)
        for name in ("data", "indices"):
            layout = h5py.VirtualLayout(shape=(n_values * times,), dtype=matrix[name].dtype)
            stored = h5py.VirtualSource(source_path, f"X/{name}", shape=(n_values,))
            for copy in range(times):
                layout[copy * n_values : (copy + 1) * n_values] = stored
            group.create_virtual_dataset(name, layout)
        indptr = matrix["indptr"][:].astype(np.int64)
        pointers = [indptr[:-1] + copy * n_values for copy in range(times)] + [np.array([n_values * times])]
        group.create_dataset("indptr", data=np.concatenate(pointers))
        obs = read_elem(source["obs"])
        tiled = pd.concat([obs] * times)
        tiled.index = pd.Index([f"{name}_{copy}" for copy in range(times) for name in obs.index])
        write_elem(target, "obs", tiled)
        write_elem(target, "var", read_elem(source["var"]))
        write_elem(target, "uns", read_elem(source["uns"]))
        write_elem(target, "layers", {})
        target.attrs.update(dict(source.attrs))


def _timer():
    import keras

    class Timer(keras.callbacks.Callback):
        """Wall time of every epoch (its validation scores and next draw included) and every step."""

        def __init__(self):
            super().__init__()
            self.epochs, self.steps = [], []

        def on_train_begin(self, logs=None):
            self.mark = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            now = time.perf_counter()
            self.epochs.append(now - self.mark)
            self.mark = now

        def on_train_batch_begin(self, batch, logs=None):
            self.step_started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(time.perf_counter() - self.step_started)

    return Timer()


def train(prepared: Path, epochs: int, options: dict) -> dict:
    """``scpermut train`` on ``prepared`` (full phase only, ``epochs`` epochs, no early stop): time and memory."""
    import h5py

    from scpermut.steps.train import train_file

    started = time.perf_counter()
    timer = _timer()
    with tempfile.TemporaryDirectory() as folder:
        model = train_file(
            prepared, Path(folder) / "model", device="cpu", callbacks=[timer],
            epochs_warmup=0, epochs_full=epochs, epochs_finetune=0, patience=10**6, **options,
        )
    seconds = time.perf_counter() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with h5py.File(prepared, "r") as handle:  # not anndata's backed mode: it would load the counts layer
        n_cells, n_genes = (int(size) for size in handle["X"].attrs["shape"])
        n_values = handle["X"]["data"].shape[0]
    # Versions before --epoch_cells fed every cell every epoch (for before/after comparisons).
    cells_per_epoch = model.record.run.get("epochs_planned", {"full": {"cells_per_epoch": n_cells}})["full"]["cells_per_epoch"]
    return {
        "synthetic": True,
        "n_cells": n_cells,
        "n_genes": n_genes,
        "non_zero_share": round(n_values / (n_cells * n_genes), 3),
        "options": options,
        "cells_per_epoch": cells_per_epoch,
        "epochs": len(timer.epochs),
        "epoch_seconds": [round(value, 1) for value in timer.epochs],
        "median_step_ms": round(1000 * float(np.median(timer.steps[5:] or timer.steps)), 2),
        "cell_epochs_per_second": round(cells_per_epoch * len(timer.epochs) / sum(timer.epochs), 1),
        "seconds_outside_epochs": round(seconds - sum(timer.epochs), 1),
        "peak_rss_mib": round(peak_mib, 1),
        "threads": os.cpu_count(),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    writer = commands.add_parser("write", help="write prepared_<n>.h5ad and atlas_<n>.h5ad")
    writer.add_argument("n_cells", type=int)
    writer.add_argument("folder", type=Path)
    trainer = commands.add_parser("train", help="time scpermut train's full phase on a prepared file")
    trainer.add_argument("prepared", type=Path)
    trainer.add_argument("--epochs", type=int, default=2)
    trainer.add_argument("--options", default="{}", help="scpermut options as JSON, e.g. '{\"epoch_cells\": 0}'")
    tiler = commands.add_parser("tile", help="write a file of a prepared file's cells repeated, its matrix virtual")
    tiler.add_argument("prepared", type=Path)
    tiler.add_argument("times", type=int)
    tiler.add_argument("out", type=Path)
    args = parser.parse_args(argv)
    if args.command == "write":
        write(args.n_cells, args.folder)
    elif args.command == "tile":
        tile(args.prepared, args.times, args.out)
    else:
        print(json.dumps(train(args.prepared, args.epochs, json.loads(args.options)), indent=2))


if __name__ == "__main__":
    main()
