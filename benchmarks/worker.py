"""Run one method on a list of splits (or one cost measure), in a process of its own, and time it.

``python benchmarks/worker.py JOB.json`` where the job names the method, its settings, the
split files and the output folder. For each split it writes ``<split>.npz`` (labels and
latent) and ``<split>.json`` (seconds of fit + predict, settings). The parent reads the
process's peak resident memory from ``wait4`` (``ru_maxrss``): a Python-side tracer such as
tracemalloc would not see the memory TensorFlow or PyTorch allocate.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path


def threads() -> int:
    """Threads every library may use in this process (set by the parent through ``OMP_NUM_THREADS``)."""
    return int(os.environ.get("OMP_NUM_THREADS", "1"))


def thread_environment(n_threads: int) -> dict:
    """Environment that holds BLAS, OpenMP, TensorFlow and PyTorch to ``n_threads`` threads.

    On a shared machine, OpenMP threads that spin-wait for a descheduled sibling make PyTorch
    many times slower (scVI: 12x here with 2 threads under a load of 6), so the default is 1.
    """
    env = dict(os.environ)
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        env[name] = str(n_threads)
    env.update(TF_NUM_INTRAOP_THREADS=str(n_threads), TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONHASHSEED="0")
    return env


def run_job(job: dict, job_file: Path, log_file: Path, n_threads: int = 1) -> dict:
    """Run ``job`` in a child process; return its exit status, wall time and peak memory."""
    job_file.parent.mkdir(parents=True, exist_ok=True)
    job_file.write_text(json.dumps(job, indent=2))
    started = time.perf_counter()
    with open(log_file, "w") as log:
        child = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), str(job_file)], stdout=log, stderr=subprocess.STDOUT, env=thread_environment(n_threads))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": child.returncode,
        "process_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }


def main(job_file: str) -> None:
    import anndata as ad
    import numpy as np
    from methods import METHODS

    job = json.loads(Path(job_file).read_text())
    if "cost" in job:
        import cost

        result = getattr(cost, job["cost"])(**job["kwargs"])
        Path(job["out"]).write_text(json.dumps(result, indent=2, default=str))
        return
    method = METHODS[job["method"]]
    out = Path(job["out"])
    out.mkdir(parents=True, exist_ok=True)
    for split_file in job["splits"]:
        name = Path(split_file).stem
        adata = ad.read_h5ad(split_file)
        started, cpu_started = time.perf_counter(), time.process_time()
        result = method(adata, seed=int(adata.uns["bench_seed"]), settings=job["settings"])
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        arrays = {"labels": np.asarray(result.labels, dtype=str)}
        if result.latent is not None:
            arrays["latent"] = np.asarray(result.latent, dtype=np.float32)
        np.savez_compressed(out / f"{name}.npz", **arrays)
        record = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "settings": result.settings, "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        print(f"{job['method']} {name}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1])
