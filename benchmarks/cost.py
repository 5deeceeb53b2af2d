"""What training costs: throughput and memory against scMusketeers, scaling, and GFLOP/s.

Every measure runs in a process of its own (``worker.py``), on SYNTHETIC cells
(``synthetic.py``), so its peak resident memory is its own.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
from common import run_job, threads

# The architecture both tools get in the head-to-head: scpermut's default encoder/decoder and
# a 64-unit hidden layer in both heads (scMusketeers' default head shape).
SHARED_ARCHITECTURE = {"hidden_layers": [256, 128], "latent_dim": 32, "dropout": 0.1, "batch_size": 128, "learning_rate": 1e-3}


def resident_mib() -> float:
    """Current resident memory of this process (VmRSS), MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def available_gib() -> float:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / 1024**2
    return float("nan")


def _step_timer(max_steps: int | None):
    import keras

    class StepTimer(keras.callbacks.Callback):
        """Times every training step and the phase; stops after ``max_steps`` steps if given."""

        def __init__(self):
            super().__init__()
            self.steps, self.epochs = [], 0

        def on_train_begin(self, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.epochs += 1

        def on_train_batch_begin(self, batch, logs=None):
            self.step_started = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps.append(time.perf_counter() - self.step_started)
            if max_steps and len(self.steps) >= max_steps:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.seconds = time.perf_counter() - self.started

    return StepTimer()


def layer_shapes(config: dict) -> list[list[int]]:
    """(inputs, outputs) of every dense layer: encoder, decoder, classifier head, batch head."""
    latent = config["latent_dim"]
    encoder = [config["n_genes"], *config["hidden_layers"], latent]
    decoder = [latent, *reversed(config["hidden_layers"]), config["n_genes"]]
    heads = [[latent, *config["classifier_layers"], config["n_classes"]], [latent, *config["adversary_layers"], config["n_batches"]]]
    return [[a, b] for widths in [encoder, decoder, *heads] for a, b in zip(widths, widths[1:], strict=False)]


def training_flops(shapes: list[list[int]], batch_size: int) -> float:
    """FLOPs of one training step over dense layers: forward, weight gradients, input gradients.

    Batch-norm, activations and losses add a few % more; the first layer needs no input gradient.
    """
    multiply_adds = sum(a * b for a, b in shapes)
    return 2.0 * batch_size * (3 * multiply_adds - shapes[0][0] * shapes[0][1])


def scpermut_training(n_cells: int, epochs: int, max_steps: int | None = None, options: dict | None = None) -> dict:
    """Train scpermut's ``full`` phase at its defaults (``options`` changed) on synthetic cells and time it."""
    import synthetic
    import tensorflow as tf
    from methods import scpermut_code_fingerprint

    from scpermut import Model

    tf.config.threading.set_intra_op_parallelism_threads(threads())
    code = scpermut_code_fingerprint()
    options = dict(options or {})
    baseline_mib = resident_mib()
    adata = synthetic.prepared(n_cells)
    data_mib = resident_mib()
    timer = _step_timer(max_steps)
    model = Model(seed=0, epochs_warmup=0, epochs_full=epochs, epochs_finetune=0, patience=10**6, **options)
    model.fit(adata, callbacks=[timer])
    config = model.record.network
    steps = np.asarray(timer.steps[5:] if len(timer.steps) > 10 else timer.steps)
    steps_per_epoch = math.ceil(n_cells / config.get("batch_size", model.settings.batch_size))
    overhead = (timer.seconds - float(np.sum(timer.steps))) / max(timer.epochs, 1)
    extrapolated = len(timer.steps) < steps_per_epoch * max(timer.epochs, 1)
    shapes = layer_shapes(config)
    flops = training_flops(shapes, model.settings.batch_size)
    return {
        "tool": "scpermut",
        "code": code,
        "n_cells": n_cells,
        "n_genes": config["n_genes"],
        "nnz_fraction": float(adata.X.nnz / (adata.n_obs * adata.n_vars)),
        "batch_size": model.settings.batch_size,
        "epochs_run": timer.epochs,
        "steps_run": len(timer.steps),
        "steps_per_epoch": steps_per_epoch,
        "cells_per_epoch": n_cells,
        "train_seconds": timer.seconds,
        "median_step_seconds": float(np.median(steps)),
        "epoch_seconds": overhead + steps_per_epoch * float(np.median(steps)) if extrapolated else timer.seconds / max(timer.epochs, 1),
        "epoch_seconds_extrapolated": extrapolated,
        "baseline_resident_mib": baseline_mib,
        "data_resident_mib": data_mib,
        "flops_per_step": flops,
        "achieved_gflops": flops / float(np.median(steps)) / 1e9,
        "layer_shapes": shapes,
        "architecture": {key: config[key] for key in ("hidden_layers", "latent_dim", "classifier_layers", "adversary_layers", "dropout")},
    }


def scmusketeers_training(n_cells: int, epochs: int) -> dict:
    """Train scMusketeers' ``full_model`` strategy (its default scheme's main stage) with the shared architecture."""
    import os
    import tempfile

    import synthetic
    import tensorflow as tf
    from common import BATCH, LABEL, UNKNOWN
    from scmusketeers.arguments.runfile import get_default_param
    from scmusketeers.transfer.optimize_model import Workflow

    tf.config.threading.set_intra_op_parallelism_threads(threads())

    class TimedWorkflow(Workflow):
        def train_scheme(self, *args, **kwargs):
            started = time.perf_counter()
            history = super().train_scheme(*args, **kwargs)
            self.train_seconds = time.perf_counter() - started
            return history

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "synthetic.h5ad")
        synthetic.raw_with_labels(n_cells).write_h5ad(path)
        run_file = get_default_param(path)
        run_file.class_key, run_file.batch_key, run_file.unlabeled_category, run_file.out_dir = LABEL, BATCH, UNKNOWN, folder
        run_file.fullmodel_epoch, run_file.classifier_epoch = epochs, 0
        run_file.layer1, run_file.layer2 = SHARED_ARCHITECTURE["hidden_layers"]
        run_file.bottleneck = SHARED_ARCHITECTURE["latent_dim"]
        run_file.dropout = SHARED_ARCHITECTURE["dropout"]
        run_file.batch_size = SHARED_ARCHITECTURE["batch_size"]
        run_file.learning_rate = SHARED_ARCHITECTURE["learning_rate"]
        workflow = TimedWorkflow(run_file=run_file)
        workflow.process_dataset()
        workflow.train_val_split()
        data_mib = resident_mib()
        workflow.make_experiment()
        trained_cells = workflow.dataset.adata_train.n_obs
    steps_per_epoch = trained_cells // run_file.batch_size + 1
    return {
        "tool": "scmusketeers",
        "n_cells": n_cells,
        "batch_size": run_file.batch_size,
        "epochs_run": epochs,
        "steps_per_epoch": steps_per_epoch,
        "cells_per_epoch": steps_per_epoch * run_file.batch_size,
        "train_seconds": workflow.train_seconds,
        "epoch_seconds": workflow.train_seconds / epochs,
        "data_resident_mib": data_mib,
        "note": "its full_model epoch = steps over its 'train' split plus an evaluation pass on train and validation cells",
    }


def matmul_reference(shapes: list[list[int]], batch_size: int, repeats: int = 200) -> dict:
    """GFLOP/s of plain dense matmuls with the training step's shapes (forward + both gradients).

    Also the GFLOP/s of one large square matmul: the machine's practical ceiling.
    """
    import tensorflow as tf

    import scpermut  # noqa: F401  (first: TensorFlow then runs with the settings scpermut sets, e.g. oneDNN off)

    tf.config.threading.set_intra_op_parallelism_threads(threads())
    rng = np.random.default_rng(0)
    tensors = [
        (tf.constant(rng.standard_normal((batch_size, a)), tf.float32), tf.constant(rng.standard_normal((a, b)), tf.float32), tf.constant(rng.standard_normal((batch_size, b)), tf.float32))
        for a, b in shapes
    ]

    @tf.function
    def step():
        total = tf.constant(0.0)
        for index, (x, w, g) in enumerate(tensors):
            y = tf.matmul(x, w)
            dw = tf.matmul(x, g, transpose_a=True)
            total += tf.reduce_sum(y[:1, :1]) + tf.reduce_sum(dw[:1, :1])
            if index:  # the first layer needs no input gradient
                total += tf.reduce_sum(tf.matmul(g, w, transpose_b=True)[:1, :1])
        return total

    flops = training_flops(shapes, batch_size)
    step().numpy()
    started = time.perf_counter()
    for _ in range(repeats):
        step().numpy()
    seconds = (time.perf_counter() - started) / repeats

    big = tf.constant(rng.standard_normal((2048, 2048)), tf.float32)

    @tf.function
    def square():
        return tf.reduce_sum(tf.matmul(big, big)[:1, :1])

    square().numpy()
    started = time.perf_counter()
    for _ in range(20):
        square().numpy()
    square_seconds = (time.perf_counter() - started) / 20
    return {
        "same_shapes_step_seconds": seconds,
        "same_shapes_gflops": flops / seconds / 1e9,
        "square_2048_gflops": 2.0 * 2048**3 / square_seconds / 1e9,
        "flops_per_step": flops,
    }


# The files whose change can change a cost measure (scpermut's package is keyed as well).
COST_CODE = ("common.py", "worker.py", "cost.py", "synthetic.py")


def measure_key(function: str, kwargs: dict, n_threads: int, code: dict, versions: dict) -> str:
    """Key of one cost measure: what it runs, with which settings, threads, code and library versions."""
    import cache

    return cache.key_digest(
        {"function": function, "kwargs": kwargs, "threads": n_threads, "code": {"cost": cache.files_fingerprint(COST_CODE), "scpermut_package": code["scpermut_package"]}, "versions": versions}
    )


def _run(name: str, function: str, kwargs: dict, folder: Path, n_threads: int, code: dict, versions: dict) -> dict:
    """Run ``function(**kwargs)`` in its own process, reusing a stored result only under the same key."""
    result_file = folder / f"{name}.json"
    key = measure_key(function, kwargs, n_threads, code, versions)
    if result_file.exists():
        stored = json.loads(result_file.read_text())
        if stored.get("key") == key:
            return {**stored, "computed_now": False}
        print(f"  stale cost measure {name} deleted (other code, settings or versions)", flush=True)
        result_file.unlink()
    print(f"[{time.strftime('%H:%M:%S')}] cost: {name}", flush=True)
    process = run_job({"cost": function, "kwargs": kwargs, "out": str(folder / f"{name}.result.json")}, folder / f"{name}.job.json", folder / f"{name}.log.txt", n_threads)
    result = {"name": name, **process}
    if process["exit_code"] == 0:
        result.update(json.loads((folder / f"{name}.result.json").read_text()))
        result_file.write_text(json.dumps({**result, "key": key}, indent=2))  # only a finished measure is stored
    else:
        result["error"] = f"failed (exit {process['exit_code']}); see {folder / f'{name}.log.txt'}"
        print(f"  {result['error']}", flush=True)
    return {**result, "key": key, "computed_now": True}


def run_all(settings: dict, folder: Path, n_threads: int, code: dict, versions: dict) -> dict:
    """Head-to-head against scMusketeers, the scaling curve and the GFLOP/s comparison."""
    folder.mkdir(parents=True, exist_ok=True)
    cells, epochs = settings["compare_cells"], settings["compare_epochs"]
    shared = {**SHARED_ARCHITECTURE, "classifier_layers": [64], "adversary_layers": [64]}
    compare = {
        "scpermut": _run(f"compare_scpermut_{cells}", "scpermut_training", {"n_cells": cells, "epochs": epochs, "options": shared}, folder, n_threads, code, versions),
        "scmusketeers": _run(f"compare_scmusketeers_{cells}", "scmusketeers_training", {"n_cells": cells, "epochs": epochs}, folder, n_threads, code, versions),
    }
    scaling = []
    for n_cells in settings["scaling_cells"]:
        limited = n_cells > 100_000
        if limited and available_gib() < settings["min_free_gib_1m"] and not (folder / f"scaling_{n_cells}.json").exists():
            scaling.append({"name": f"scaling_{n_cells}", "n_cells": n_cells, "error": f"skipped: only {available_gib():.1f} GiB available (need {settings['min_free_gib_1m']})"})
            continue
        scaling.append(_run(f"scaling_{n_cells}", "scpermut_training", {"n_cells": n_cells, "epochs": 1, "max_steps": settings["scaling_max_steps"] if limited else None}, folder, n_threads, code, versions))
    measured = next((run for run in reversed(scaling) if "layer_shapes" in run and not run.get("epoch_seconds_extrapolated")), None)
    reference = None
    if measured:
        reference = _run("matmul_reference", "matmul_reference", {"shapes": measured["layer_shapes"], "batch_size": measured["batch_size"]}, folder, n_threads, code, versions)
        reference["compared_with"] = measured["name"]
    return {"compare": compare, "scaling": scaling, "matmul": reference, "machine": machine(), "threads": n_threads}


def machine() -> dict:
    import platform

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("model name")), platform.processor())
    total = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal:"))
    return {"cpu": model, "cores": os.cpu_count(), "memory_gib": round(total / 1024**2, 1), "platform": platform.platform(), "python": platform.python_version()}
