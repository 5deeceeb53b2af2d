"""What the benchmark scripts share: the obs columns of a split and the parent side of a worker process.

A split (see ``tasks.py``) carries raw counts in ``X``, the label a method may learn from in
``obs[LABEL]`` (``UNKNOWN`` for unlabelled and query cells), the batch in ``obs[BATCH]``, and,
hidden from the methods (:func:`method_view`), the truth, the role, the evaluation mask and the
task's notes in ``uns``. Each method runs in a child
process (``worker.py``), whose peak resident memory the parent reads from ``wait4``
(``ru_maxrss``): a Python-side tracer such as tracemalloc would not see the memory TensorFlow
or PyTorch allocate.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

LABEL = "bench_label"  # what methods learn from: the true type, or UNKNOWN
TRUTH = "bench_truth"  # held back for scoring only
BATCH = "batch"
ROLE = "bench_role"  # "reference" or "query"
EVALUATED = "bench_evaluated"  # cells scored for label transfer
UNKNOWN = "Unknown"
# All a method is handed of a split's obs: what a user would give it.
METHOD_COLUMNS = (LABEL, BATCH)
WORKER = Path(__file__).resolve().parent / "worker.py"


def run_name(split_id: str, seed: int) -> str:
    """File stem of one method run: a split and the seed the method ran with."""
    return f"{split_id}__seed{seed}"


def method_view(split):
    """What a method may see of ``split``: raw counts, gene names and ``METHOD_COLUMNS``; no truth, role, mask or ``uns``."""
    import anndata as ad

    return ad.AnnData(X=split.X.copy(), obs=split.obs[list(METHOD_COLUMNS)].copy(), var=split.var[[]].copy())


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
        child = subprocess.Popen([sys.executable, str(WORKER), str(job_file)], stdout=log, stderr=subprocess.STDOUT, env=thread_environment(n_threads))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    return {
        "exit_code": child.returncode,
        "process_seconds": round(time.perf_counter() - started, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
    }
