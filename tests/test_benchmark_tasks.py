"""The benchmark's splits and scoring (benchmarks/tasks.py, scoring.py) on the shipped CellBench data.

The peers themselves need the benchmark environment and run only under benchmarks/run.py;
what is tested here is what decides which cells each method may learn from and how every
method is scored.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scoring  # noqa: E402
import tasks  # noqa: E402
from common import BATCH, EVALUATED, LABEL, ROLE, TRUTH, UNKNOWN  # noqa: E402


@pytest.fixture(scope="module")
def cellbench(assets_dir):
    return tasks.Dataset("cellbench_3cl", "cellbench_3cl_3tech.h5ad", "cell_line").load(Path(assets_dir) / "test_data")


def test_leave_one_batch_out_hides_every_label_of_the_query_batch(cellbench):
    split = tasks.leave_one_batch_out(cellbench, "sc_celseq2")
    query = (split.obs[BATCH] == "sc_celseq2").to_numpy()
    assert (split.obs[ROLE].to_numpy()[query] == "query").all()
    assert (split.obs[LABEL].to_numpy()[query] == UNKNOWN).all()
    assert (split.obs[LABEL].to_numpy()[~query] == split.obs[TRUTH].to_numpy()[~query]).all()
    assert np.array_equal(split.obs[EVALUATED].to_numpy(), query)


def test_partial_atlas_labels_the_asked_share_of_each_type_reproducibly(cellbench):
    first = tasks.partial_atlas(cellbench, 0.1, seed=3)
    again = tasks.partial_atlas(cellbench, 0.1, seed=3)
    other = tasks.partial_atlas(cellbench, 0.1, seed=4)
    assert np.array_equal(first.obs[LABEL].to_numpy(), again.obs[LABEL].to_numpy())
    assert not np.array_equal(first.obs[LABEL].to_numpy(), other.obs[LABEL].to_numpy())
    labelled = first.obs[LABEL] != UNKNOWN
    for cell_type, size in first.obs[TRUTH].value_counts().items():
        assert labelled[first.obs[TRUTH] == cell_type].sum() == round(0.1 * size)
    assert np.array_equal(first.obs[EVALUATED].to_numpy(), ~labelled.to_numpy())


def test_rare_type_is_about_one_percent_of_the_reference(cellbench):
    split = tasks.rare_type(cellbench, "H2228", seed=0)
    reference = split.obs[LABEL] != UNKNOWN
    share = (split.obs[LABEL][reference] == "H2228").mean()
    assert 0.005 < share < 0.02
    query_batch = split.uns["bench_rare"]["query_batch"]
    assert query_batch == "sc_10x"  # the batch holding most H2228 cells
    assert (split.obs[TRUTH][split.obs[BATCH] == query_batch] == "H2228").sum() == (cellbench.obs[TRUTH][cellbench.obs[BATCH] == query_batch] == "H2228").sum()


def test_scoring_gives_a_perfect_prediction_full_marks_and_a_wrong_rare_type_zero(cellbench):
    split = tasks.rare_type(cellbench, "H2228", seed=0)
    truth = split.obs[TRUTH].astype(str).to_numpy()
    perfect = scoring.score(split, truth, None)
    assert perfect["balanced_accuracy"] == pytest.approx(1.0)
    assert perfect["rare_type_f1"] == pytest.approx(1.0)
    assert perfect["f1 rare (<1%)"] == pytest.approx(1.0)
    missed = np.where(truth == "H2228", "H1975", truth)
    scores = scoring.score(split, missed, None)
    assert scores["rare_type_f1"] == 0.0
    assert scores["balanced_accuracy"] == pytest.approx(2 / 3)


# --- the result cache (benchmarks/cache.py, run.py) and the verdict rule (benchmarks/verdict.py) ---

import json  # noqa: E402

import cache  # noqa: E402
import pandas as pd  # noqa: E402
import verdict  # noqa: E402

CODE = {"scpermut_package": "p" * 64, "scpermut_tune": "t" * 64, "benchmark_methods": "m" * 64, "benchmark_splits": "s" * 64}
VERSIONS = {"scvi-tools": "1.4.2", "numpy": "2.4.6"}
SPLIT_KEY = cache.split_key({"task": "lobo", "dataset": "d", "name": "b1", "seed": 0, "rare_type": None}, "f" * 64, CODE)


def key_for(function="scpermut", settings=None, code=CODE, versions=VERSIONS, seeds=(0, 1, 2), threads=1, split_key=SPLIT_KEY):
    return cache.run_key(function, {"options": {}} if settings is None else settings, seeds, [split_key], threads, code, versions)


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_the_closure_holds_what_the_roots_can_import_lazily_or_relatively_and_nothing_else(tmp_path):
    package = write_package(
        tmp_path / "pkg",
        {
            "__init__.py": "",
            "a.py": "from .b import g\nfrom .sub import e\n",
            "b.py": "def g():\n    from pkg.c import f\n    return f()\n",
            "c.py": "def f():\n    return 1\n",
            "d.py": "import pkg.a\n",  # imports the roots, is not imported by them
            "sub/__init__.py": "",
            "sub/e.py": "from ..c import f\n",
        },
    )
    closure = {str(path.relative_to(package)) for path in cache.package_closure(package, ("pkg.a",))}
    assert closure == {"__init__.py", "a.py", "b.py", "c.py", "sub/__init__.py", "sub/e.py"}
    first = cache.closure_fingerprint(package, ("pkg.a",))
    (package / "d.py").write_text("import pkg.a\nx = 2\n")
    assert cache.closure_fingerprint(package, ("pkg.a",)) == first
    (package / "c.py").write_text("def f():\n    return 2\n")
    assert cache.closure_fingerprint(package, ("pkg.a",)) != first


def test_the_shipped_package_closure_leaves_out_the_cli_steps_and_report_but_not_the_model():
    package = Path(__file__).resolve().parents[1] / "src" / "scpermut"
    closure = {str(path.relative_to(package)) for path in cache.package_closure(package)}
    assert {"model/api.py", "model/network.py", "model/train/trainer.py", "annotation.py", "data/preprocess.py", "options.py"} <= closure
    assert not {name for name in closure if name.startswith(("steps/", "report/")) or name == "cli.py"}
    tuned = {str(path.relative_to(package)) for path in cache.package_closure(package, cache.TUNE_ROOTS)}
    assert closure < tuned and "steps/tune.py" in tuned


def test_a_stored_result_is_current_only_under_the_same_key_with_every_file(tmp_path):
    folder = tmp_path / "group"
    folder.mkdir()
    (folder / "r.npz").write_bytes(b"x")
    cache.mark_current(folder, key_for())
    assert cache.is_current(folder, key_for(), ["r.npz"])
    assert not cache.is_current(folder, key_for(), ["r.npz", "missing.json"])
    other_package = {**CODE, "scpermut_package": "q" * 64}
    other_methods = {**CODE, "benchmark_methods": "n" * 64}
    for stale in (
        key_for(settings={"options": {"epochs_full": 5}}),
        key_for(code=other_package),
        key_for(code=other_methods),
        key_for(versions={**VERSIONS, "numpy": "2.5.0"}),
        key_for(seeds=(0, 1)),
        key_for(threads=2),
        key_for(split_key=cache.split_key({"task": "lobo", "dataset": "d", "name": "b1", "seed": 0, "rare_type": None}, "e" * 64, CODE)),
    ):
        assert not cache.is_current(folder, stale, ["r.npz"])
    # A peer's result does not depend on scpermut's package, only on the benchmark code.
    cache.mark_current(folder, key_for("celltypist", {}))
    assert cache.is_current(folder, key_for("celltypist", {}, code=other_package), ["r.npz"])
    assert not cache.is_current(folder, key_for("celltypist", {}, code=other_methods), ["r.npz"])
    assert cache.key_differences(key_for(), key_for(code=other_package)) == ["code.scpermut_package"]
    # A tuned entry also runs `scpermut tune`: it is keyed by that wider closure.
    tuned = {"options": {}, "tune": {"trials": 24}}
    cache.mark_current(folder, key_for(settings=tuned))
    assert not cache.is_current(folder, key_for(settings=tuned, code={**CODE, "scpermut_tune": "u" * 64}), ["r.npz"])


def test_an_unkeyed_or_unfinished_result_is_not_current(tmp_path):
    folder = tmp_path / "group"
    folder.mkdir()
    (folder / "r.npz").write_bytes(b"x")
    assert not cache.is_current(folder, key_for(), ["r.npz"])  # files from before keys existed
    (folder / cache.KEY_FILE).write_text("{not json")
    assert not cache.is_current(folder, key_for(), ["r.npz"])


def _fake_job(calls):
    """Stands in for run_job: writes one result per run, labelled with the call number."""
    import numpy as np

    def fake(job, job_file, log_file, n_threads=1):
        calls.append(job)
        out = Path(job["out"])
        out.mkdir(parents=True, exist_ok=True)
        for split_file, seed in job["runs"]:
            stem = f"{Path(split_file).stem}__seed{seed}"
            np.savez(out / f"{stem}.npz", labels=np.array([f"call{len(calls)}"]))
            (out / f"{stem}.json").write_text(json.dumps({"seconds": 1.0, "settings": job["settings"]}))
        return {"exit_code": 0, "process_seconds": 1.0, "peak_rss_mib": 1.0, "cpu_seconds": 1.0}

    return fake


def test_run_methods_recomputes_a_stale_group_and_reuses_a_current_one(tmp_path, monkeypatch):
    import numpy as np
    import profiles
    import run

    calls = []
    monkeypatch.setattr(run, "run_job", _fake_job(calls))
    split = tasks.Split("lobo", "d", "b1", 0, "query = b1", run_seeds=(0, 1, 2))
    paths, keys = {split.id: tmp_path / f"{split.id}.h5ad"}, {split.id: SPLIT_KEY}
    profile = {"tasks": ["lobo"], "threads": 1, "settings": {name: {} for name in profiles.PEERS} | {"scpermut": {"options": {}}}}

    first = run.run_methods([split], paths, keys, profile, tmp_path, CODE, VERSIONS)
    assert len(calls) == len(profiles.PEERS) and all(record["computed_now"] for record in first)
    assert [record["computed_now"] for record in run.run_methods([split], paths, keys, profile, tmp_path, CODE, VERSIONS)] == [False] * len(first)
    assert len(calls) == len(profiles.PEERS)

    # scpermut's code changed: its group is deleted and computed again, the peers' are kept.
    changed = {**CODE, "scpermut_package": "q" * 64}
    group = run.group_folder(tmp_path, "scpermut", "lobo", "d")
    (group / "left_over_from_old_code.txt").write_text("stale")
    again = run.run_methods([split], paths, keys, profile, tmp_path, changed, VERSIONS)
    assert [record["method"] for record in again if record["computed_now"]] == ["scpermut"]
    assert not (group / "left_over_from_old_code.txt").exists()
    labels = np.load(group / f"{split.id}__seed0.npz")["labels"]
    assert labels.tolist() == [f"call{len(calls)}"]

    # A run that fails is never marked current: the next invocation runs it again.
    monkeypatch.setattr(run, "run_job", lambda *args, **kwargs: {"exit_code": 1, "process_seconds": 0, "peak_rss_mib": 0, "cpu_seconds": 0})
    failed = run.run_methods([split], paths, keys, {**profile, "threads": 2}, tmp_path, changed, VERSIONS)
    assert all(record["exit_code"] == 1 for record in failed)
    assert not any((run.group_folder(tmp_path, name, "lobo", "d") / cache.KEY_FILE).exists() for name in profiles.PEERS)
    assert not list(tmp_path.glob("runs/*/*/*.npz"))  # the stale results went with their key


def test_only_runs_the_named_methods_and_a_tuned_entry_runs_scpermut_with_its_search(tmp_path, monkeypatch):
    import profiles
    import run

    calls = []
    monkeypatch.setattr(run, "run_job", _fake_job(calls))
    split = tasks.Split("lobo", "d", "b1", 0, "query = b1", run_seeds=(0, 1, 2))
    paths, keys = {split.id: tmp_path / f"{split.id}.h5ad"}, {split.id: SPLIT_KEY}
    profile = {**profiles.STANDARD, "tuned_datasets": ["d"], "threads": 1}
    tuned = next(iter(profiles.TUNED))

    records = run.run_methods([split], paths, keys, profile, tmp_path, CODE, VERSIONS, only=["celltypist", tuned])
    assert sorted(record["method"] for record in records) == sorted(["celltypist", tuned])
    assert sorted(job["method"] for job in calls) == ["celltypist", "scpermut"]
    assert next(job for job in calls if job["method"] == "scpermut")["settings"]["tune"] == profiles.TUNED[tuned]
    # Splits of datasets without a search get no tuned entry.
    assert tuned not in run.entries_for(tasks.Split("lobo", "other", "b1", 0, ""), profile)


def test_a_cost_measure_is_reused_only_under_the_same_key(tmp_path, monkeypatch):
    import cost

    calls = []

    def fake(job, job_file, log_file, n_threads=1):
        calls.append(job)
        Path(job["out"]).write_text(json.dumps({"value": len(calls)}))
        return {"exit_code": 0, "process_seconds": 1.0, "peak_rss_mib": 1.0, "cpu_seconds": 1.0}

    monkeypatch.setattr(cost, "run_job", fake)
    first = cost._run("m", "matmul_reference", {"shapes": [[2, 2]], "batch_size": 4}, tmp_path, 1, CODE, VERSIONS)
    again = cost._run("m", "matmul_reference", {"shapes": [[2, 2]], "batch_size": 4}, tmp_path, 1, CODE, VERSIONS)
    assert (first["value"], first["computed_now"], again["value"], again["computed_now"]) == (1, True, 1, False)
    changed = cost._run("m", "matmul_reference", {"shapes": [[2, 2]], "batch_size": 8}, tmp_path, 1, CODE, VERSIONS)
    assert (changed["value"], changed["computed_now"]) == (2, True)
    other_code = cost._run("m", "matmul_reference", {"shapes": [[2, 2]], "batch_size": 8}, tmp_path, 1, {**CODE, "scpermut_package": "q" * 64}, VERSIONS)
    assert other_code["value"] == 3


@pytest.mark.parametrize(
    ("ours", "best", "expected"),
    [
        ((0.80, 0.01, 3), (0.75, 0.02, 3), "met"),  # gap 0.05 > spread 0.02
        ((0.76, 0.01, 3), (0.75, 0.02, 3), "tie"),  # gap 0.01 within 0.02
        ((0.74, 0.03, 3), (0.75, 0.01, 3), "tie"),  # lower, but inside the noise
        ((0.70, 0.01, 3), (0.75, 0.02, 3), "missed"),
        ((0.90, 0.0, 1), (0.75, 0.0, 1), "no verdict"),  # one seed: no spread to judge by
    ],
)
def test_verdict_rule(ours, best, expected):
    assert verdict.verdict(*ours, *best) == expected


def test_seed_spread_averages_splits_within_a_seed_first_and_picks_the_best_peer():
    rows = []
    for seed, (a, b) in enumerate([(0.9, 0.7), (0.92, 0.72), (0.88, 0.68)]):
        rows += [{"method": "scpermut", "split": "s1", "seed": seed, "m": a}, {"method": "scpermut", "split": "s2", "seed": seed, "m": b}]
        rows += [{"method": "peer", "split": "s1", "seed": seed, "m": 0.7}, {"method": "peer", "split": "s2", "seed": seed, "m": 0.7}]
        rows += [{"method": "weak", "split": "s1", "seed": seed, "m": 0.1}, {"method": "weak", "split": "s2", "seed": seed, "m": 0.1}]
    frame = pd.DataFrame(rows)
    summary = verdict.seed_summary(frame, "m", ["method"])
    # per-seed means 0.80, 0.82, 0.78: sd 0.02 (the split-to-split difference of 0.2 is not noise)
    assert summary.loc["scpermut", "mean"] == pytest.approx(0.80)
    assert summary.loc["scpermut", "sd"] == pytest.approx(0.02)
    assert summary.loc["scpermut", "n_seeds"] == 3
    result = verdict.compare(frame, "m", "scpermut", ["peer", "weak"])
    assert result["best_peer"] == "peer" and result["verdict"] == "met"


def test_git_state_names_the_commit_and_every_changed_path(tmp_path):
    import subprocess

    import run

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "tracked.py").write_text("a = 1\n")
    git("add", "tracked.py")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "c")
    clean = run.git_state(tmp_path)
    assert clean["clean"] and len(clean["commit"]) == 40
    (tmp_path / "tracked.py").write_text("a = 2\n")  # " M tracked.py": a leading blank column
    (tmp_path / "new.py").write_text("")
    dirty = run.git_state(tmp_path)
    assert not dirty["clean"] and sorted(dirty["changed"]) == ["new.py", "tracked.py"]


def test_the_page_judges_mixing_against_correcting_peers_and_tuned_against_default():
    import profiles
    import report

    tuned = next(iter(profiles.TUNED))
    rows = []
    for seed in (0, 1, 2):
        for method, accuracy, ilisi in (("scpermut", 0.80, 0.50), (tuned, 0.90, 0.52), ("harmony_knn", 0.70, 0.60), ("pca_knn", 0.60, 0.90)):
            settings = {"changed": {"latent_dim": 16}} if method == tuned else {"changed": {}}
            rows.append({"task": "lobo", "dataset": "d", "split": "b1", "setting": "b1", "seed": seed, "method": method, "status": "ok",
                         "balanced_accuracy": accuracy + 0.01 * seed, "ilisi": ilisi + 0.001 * seed, "settings": json.dumps(settings)})
    scores = pd.DataFrame(rows)
    lines = report.targets(scores)
    mixing = next(line for line in lines if "ilisi" in line)
    # Uncorrected PCA mixes best here, but the target is the best correcting peer.
    assert "harmony_knn" in mixing and "**missed**" in mixing
    assert any("balanced accuracy" in line and "**met**" in line for line in lines)
    section = "\n".join(report.tuned_section(scores, {"tuned_datasets": ["d"]}))
    assert "## Tuned against default" in section
    assert "balanced accuracy 0.910 ± 0.010 (3 seeds) against 0.810 ± 0.010 (3 seeds): **met**" in section
    assert "ilisi 0.521 ± 0.001 (3 seeds) against 0.501 ± 0.001 (3 seeds): **met**" in section
    assert '`{"latent_dim": 16}`' in section
    assert report.tuned_section(scores, {"tuned_datasets": []}) == []
