"""The child process: run one method on a list of splits (or one cost measure) and time it.

``python benchmarks/worker.py JOB.json`` where the job names the method, its settings, the
runs (split file and seed) and the output folder. The method is handed only
:func:`common.method_view` of each split (never its truth). For each run it writes
``<split>__seed<seed>.npz`` (labels, and the latent and novelty score when the method has them) and ``<split>__seed<seed>.json`` (seconds of
fit + predict, settings). The parent side (:func:`common.run_job`) starts it and reads its
peak memory.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def main(job_file: str) -> None:
    import anndata as ad
    import numpy as np
    from common import method_view, run_name
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
    for split_file, seed in job["runs"]:
        name = run_name(Path(split_file).stem, seed)
        view = method_view(ad.read_h5ad(split_file))
        started, cpu_started = time.perf_counter(), time.process_time()
        result = method(view, seed=int(seed), settings=job["settings"])
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        arrays = {"labels": np.asarray(result.labels, dtype=str)}
        if result.latent is not None:
            arrays["latent"] = np.asarray(result.latent, dtype=np.float32)
        if result.novelty is not None:
            arrays["novelty"] = np.asarray(result.novelty, dtype=np.float32)
        np.savez_compressed(out / f"{name}.npz", **arrays)
        record = {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "settings": result.settings, "peak_rss_mib_so_far": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
        (out / f"{name}.json").write_text(json.dumps(record, indent=2, default=str))
        print(f"{job['method']} {name}: {seconds:.1f} s", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    main(sys.argv[1])
