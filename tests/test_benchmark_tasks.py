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


# --- issue 21: novel types, the SYNTHETIC atlas, what methods see, the defaults search ---

import atlas  # noqa: E402
from dataclasses import replace  # noqa: E402

SMALL_ATLAS = atlas.AtlasParams(n_cells=6000, n_genes=400)


def test_novel_type_is_absent_from_the_reference_and_kept_in_the_query_batch_holding_most_of_it(cellbench):
    split = tasks.novel_type(cellbench, "H2228")
    query = (split.obs[ROLE] == "query").to_numpy()
    truth = split.obs[TRUTH].to_numpy()
    assert split.uns["bench_novel"] == {"type": "H2228", "query_batch": "sc_10x"}
    assert (split.obs[BATCH].to_numpy()[query] == "sc_10x").all()
    assert "H2228" not in set(split.obs[LABEL].to_numpy()[~query])
    assert not (~query & (truth == "H2228")).any()  # its reference cells are dropped
    assert (query & (truth == "H2228")).sum() == ((cellbench.obs[BATCH] == "sc_10x") & (cellbench.obs[TRUTH] == "H2228")).sum()
    # Accuracy is scored on the known types only; the novel cells are scored for rejection.
    assert np.array_equal(split.obs[EVALUATED].to_numpy(), query & (truth != "H2228"))


def test_novelty_scores_count_rejections_of_unseen_and_known_query_cells(cellbench):
    split = tasks.novel_type(cellbench, "H2228")
    truth = split.obs[TRUTH].astype(str).to_numpy()
    query = (split.obs[ROLE] == "query").to_numpy()
    unseen = query & (truth == "H2228")
    perfect = np.where(unseen, UNKNOWN, truth)
    scores = scoring.score(split, perfect, None, novelty=unseen.astype(float))
    assert (scores["novel_recall"], scores["false_rejection"], scores["novelty_auroc"]) == (1.0, 0.0, 1.0)
    assert scores["balanced_accuracy"] == pytest.approx(1.0)
    # A method that never rejects: no recall; an inverted score: AUROC 0.
    absorbed = scoring.novelty_scores(split, np.where(unseen, "H1975", truth), 1.0 - unseen)
    assert (absorbed["novel_recall"], absorbed["false_rejection"], absorbed["novelty_auroc"]) == (0.0, 0.0, 0.0)
    # Rejecting every query cell: all novel cells found, every known one wrongly rejected.
    everything = scoring.novelty_scores(split, np.where(query, UNKNOWN, truth), None)
    assert (everything["novel_recall"], everything["false_rejection"]) == (1.0, 1.0) and "novelty_auroc" not in everything
    # A split whose query holds only reference types has nothing to reject.
    assert scoring.novelty_scores(tasks.leave_one_batch_out(cellbench, "sc_10x"), truth, None) == {}


def test_the_probability_rule_rejects_at_and_below_the_threshold_as_celltypist_prob_match_does():
    labels = np.array(["A", "B", "C"])
    novelty = 1 - np.array([0.9, 0.5, 0.49])  # highest class probabilities
    assert scoring.rejected_below(labels, novelty, 0.5).tolist() == ["A", UNKNOWN, UNKNOWN]


def test_leave_batches_out_holds_out_a_seeded_share_of_batches():
    adata = tasks.SyntheticDataset("small", SMALL_ATLAS).load()
    drawn = tasks.drawn_batches(adata, 0.1, draw=0)
    assert drawn == tasks.drawn_batches(adata, 0.1, draw=0) != tasks.drawn_batches(adata, 0.1, draw=1)
    assert len(drawn) == 5
    split = tasks.build(tasks.Split("batches", "small", "10pct_draw0", 0, ""), adata)
    query = (split.obs[ROLE] == "query").to_numpy()
    assert np.array_equal(query, split.obs[BATCH].isin(drawn).to_numpy())
    assert (split.obs[LABEL].to_numpy()[query] == UNKNOWN).all()


def test_the_atlas_is_deterministic_for_a_seed_and_cached_by_its_parameters(tmp_path):
    first, again = atlas.generate(SMALL_ATLAS), atlas.generate(SMALL_ATLAS)
    other = atlas.generate(replace(SMALL_ATLAS, seed=1))
    assert (first.X != again.X).nnz == 0 and first.obs.equals(again.obs)
    assert first.X.shape == other.X.shape and (first.X != other.X).nnz > 0
    stored = atlas.cached(SMALL_ATLAS, tmp_path)
    assert len(list(tmp_path.glob("atlas_*.h5ad"))) == 1 and (atlas.cached(SMALL_ATLAS, tmp_path).X != stored.X).nnz == 0
    assert atlas.params_digest(SMALL_ATLAS) != atlas.params_digest(replace(SMALL_ATLAS, batch_lfc_sd=0.0))


def test_the_atlas_has_many_skewed_types_in_uneven_batches_each_holding_a_subset():
    adata = atlas.generate(SMALL_ATLAS)
    assert adata.obs["cell_type"].nunique() == 40 and adata.obs["batch"].nunique() == 50
    shares = atlas.type_shares(SMALL_ATLAS)
    assert shares.max() / shares.min() > 100 and (shares < 0.002).sum() == SMALL_ATLAS.n_very_rare
    sizes = adata.obs["batch"].value_counts()
    assert sizes.max() > 4 * sizes.min()
    types_per_batch = adata.obs.groupby("batch", observed=True)["cell_type"].nunique()
    assert types_per_batch.max() < 40
    assert (adata.uns["bench_atlas"]["presence"].sum(axis=0) >= SMALL_ATLAS.min_batches_per_type).all()
    counts = adata.X.data
    assert np.array_equal(counts, np.round(counts)) and counts.min() > 0


def test_the_atlas_batch_effect_has_its_stated_size_and_is_the_only_difference_without_it():
    adata = atlas.generate(SMALL_ATLAS)
    shifts = adata.uns["bench_atlas"]["batch_log_fold_shifts"]
    assert shifts.shape == (50, SMALL_ATLAS.n_genes) and shifts.std() == pytest.approx(SMALL_ATLAS.batch_lfc_sd, rel=0.05)
    # The counts carry the shift: one type's mean log-expression ratio between its two largest batches follows it.
    frame = adata.obs.assign(i=np.arange(adata.n_obs))
    common = frame["cell_type"].value_counts().index[0]
    a, b = frame[frame["cell_type"] == common]["batch"].value_counts().index[:2]
    mean = {name: np.asarray(adata.X[frame.loc[(frame["cell_type"] == common) & (frame["batch"] == name), "i"].to_numpy()].mean(axis=0)).ravel() for name in (a, b)}
    expressed = (mean[a] > 1) & (mean[b] > 1)
    measured = np.log(mean[a][expressed] / mean[b][expressed])
    stated = (shifts[int(a[5:])] - shifts[int(b[5:])])[expressed]
    assert np.corrcoef(measured, stated)[0, 1] > 0.8
    # Without the gene-wise effect: the same cells, types and batches.
    clean = atlas.generate(replace(SMALL_ATLAS, batch_lfc_sd=0.0))
    assert clean.obs.equals(adata.obs) and not clean.uns["bench_atlas"]["batch_log_fold_shifts"].any()


def test_the_atlas_batch_effect_is_real_and_its_types_are_recoverable_without_it():
    from methods import knn_transfer, pca_embedding
    from scpermut.metrics import batch_mixing
    from sklearn.metrics import balanced_accuracy_score

    found = {}
    for sd in (SMALL_ATLAS.batch_lfc_sd, 0.0):
        adata = atlas.generate(replace(SMALL_ATLAS, batch_lfc_sd=sd))
        adata.obs = adata.obs.rename(columns={"cell_type": TRUTH})
        batches, truth = adata.obs[BATCH].to_numpy(), adata.obs[TRUTH].to_numpy()
        latent = pca_embedding(adata)
        query = np.isin(batches, tasks.drawn_batches(adata, 0.1, 0))
        predicted = knn_transfer(latent, np.where(query, UNKNOWN, truth))
        found[sd] = (batch_mixing(latent, batches)["batch_entropy"], balanced_accuracy_score(truth[query], predicted[query]))
    (mixed_with, accuracy_with), (mixed_without, accuracy_without) = found[SMALL_ATLAS.batch_lfc_sd], found[0.0]
    assert mixed_with < 0.5 * mixed_without  # uncorrected PCA separates the batches
    assert accuracy_without > 0.8 and accuracy_with < accuracy_without - 0.1


def test_a_method_sees_counts_label_and_batch_only(cellbench, tmp_path, monkeypatch):
    import methods
    import worker

    seen = []

    def spy(adata, seed, settings):
        seen.append((sorted(adata.obs.columns), dict(adata.uns), list(adata.obsm), list(adata.var.columns)))
        return methods.Prediction(adata.obs[LABEL].to_numpy(), None, {}, np.zeros(adata.n_obs))

    monkeypatch.setitem(methods.METHODS, "spy", spy)
    split = tasks.novel_type(cellbench, "H2228")
    split.write_h5ad(tmp_path / "split.h5ad")
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"method": "spy", "settings": {}, "runs": [[str(tmp_path / "split.h5ad"), 0]], "out": str(tmp_path / "out")}))
    worker.main(str(job))
    assert seen == [(sorted([LABEL, BATCH]), {}, [], [])]
    assert np.load(tmp_path / "out" / "split__seed0.npz")["novelty"].shape == (split.n_obs,)


def test_the_defaults_search_ranks_variants_by_the_stated_aggregate_over_datasets_and_seeds():
    import choose_defaults

    rows = []
    for seed in (0, 1, 2):
        for method, accuracy in (("defaults", 0.80), ("better", 0.90)):
            for dataset, folds in (("d1", ("a", "b")), ("d2", ("c",))):
                for fold in folds:
                    rows.append({"method": method, "seed": seed, "task": "lobo", "dataset": dataset, "split": fold,
                                 "balanced_accuracy": accuracy + 0.01 * seed, "ilisi": 0.5, "scib_total": 0.6})
                rows.append({"method": method, "seed": seed, "task": "novel", "dataset": dataset, "split": "t",
                             "novel_recall": 0.5, "false_rejection": 0.2})
    table = choose_defaults.ranking(pd.DataFrame(rows))
    assert list(table.index) == ["better", "defaults"]
    # mean of accuracy, iLISI, scib total, recall and 1 - false rejection
    assert table.loc["better", ("mean", "aggregate")] == pytest.approx((0.91 + 0.5 + 0.6 + 0.5 + 0.8) / 5)
    assert table.loc["better", ("sd", "balanced_accuracy")] == pytest.approx(0.01)
    text = "\n".join(choose_defaults.lines(table))
    assert "worse than better" in text


def test_a_defaults_search_runs_only_its_variants_on_every_split():
    import run

    profile = {**profiles_module().QUICK, "variants": {"defaults": {}, "v": {"align_weight": 0.5}}}
    assert run.entries_for(tasks.Split("novel", "d", "t", 0, ""), profile) == ["defaults", "v"]
    assert run.method_entries(profile)["v"] == ("scpermut", {"options": {**profile["settings"]["scpermut"]["options"], "align_weight": 0.5}})


def profiles_module():
    import profiles

    return profiles


def test_on_the_novel_task_a_probabilistic_peer_is_also_scored_under_its_stated_rejection_rule(cellbench, tmp_path):
    import profiles
    import run

    split = tasks.Split("novel", "cellbench_3cl", "H2228", 0, "", "H2228", run_seeds=(0,))
    adata = tasks.build(split, cellbench)
    paths = {split.id: tmp_path / f"{split.id}.h5ad"}
    adata.write_h5ad(paths[split.id])
    truth = adata.obs[TRUTH].astype(str).to_numpy()
    unseen = truth == "H2228"
    # Confident on known cells, unsure (highest probability 0.4) on the unseen type, never answering Unknown itself.
    labels, novelty = np.where(unseen, "H1975", truth).astype(str), np.where(unseen, 0.6, 0.1)
    records = []
    for name in profiles.PEERS:
        folder = run.group_folder(tmp_path, name, split.task, split.dataset)
        folder.mkdir(parents=True)
        np.savez(folder / f"{split.id}__seed0.npz", labels=labels, novelty=novelty)
        (folder / f"{split.id}__seed0.json").write_text(json.dumps({"seconds": 1.0, "settings": {}}))
        records.append({"method": name, "task": split.task, "dataset": split.dataset, "exit_code": 0})
    scores = run.score_all([split], paths, {}, {"scib_tasks": [], "tasks": ["novel"]}, tmp_path, records).set_index("method")
    assert scores.loc["celltypist", "novel_recall"] == 0.0 and scores.loc["celltypist", "novelty_auroc"] == 1.0
    ruled = scores.loc[profiles.rejection_name("celltypist")]
    assert (ruled["novel_recall"], ruled["false_rejection"]) == (1.0, 0.0)
    assert set(profiles.REJECTION_RULES) == {"celltypist", "scanvi"} and profiles.rejection_name("scanvi") in scores.index
    assert len(scores) == len(profiles.PEERS) + len(profiles.REJECTION_RULES)


def test_map_task_puts_reference_and_query_rows_back_in_split_order_and_pages_each_batch():
    import map as map_task

    query = np.array([False, True, False, True])
    labels = map_task._in_split_order(query, np.array(["a", "b"]), np.array(["query1", "query2"]))
    assert labels.tolist() == ["a", "query1", "b", "query2"]
    latent = map_task._in_split_order(query, np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))
    np.testing.assert_array_equal(latent[:, 0], [0, 1, 0, 1])
    rows = [
        {"dataset": "d", "held_out": batch, "seed": seed, "method": method, "balanced_accuracy": score, "ilisi": 0.5,
         "map_seconds": 1.0, "map_cpu_seconds": 0.5, "reference_seconds": None}
        for batch, method, score in (("b1", "scpermut adapted", 0.9), ("b2", "scANVI surgery", 0.8))
        for seed in (0, 1)
    ]
    page = map_task.page(rows, "python benchmarks/map.py")
    assert "| b1 | scpermut adapted | 0.900 ± 0.000 |" in page and "| b2 | scANVI surgery | 0.800 ± 0.000 |" in page


def test_the_atlas_profile_runs_every_peer_on_one_draw_of_the_mid_sized_atlas_and_seeds_can_be_set(monkeypatch, capsys):
    import profiles
    import run

    params = tasks.DATASETS["synthetic_atlas_10k"].params
    assert (params.n_cells, params.n_types, params.n_batches) == (10_000, 40, 50)
    assert replace(params, n_cells=30_000) == tasks.DATASETS["synthetic_atlas"].params  # only the size differs
    monkeypatch.setattr(tasks.SyntheticDataset, "load", lambda self: atlas.generate(SMALL_ATLAS))
    (split,) = tasks.plan({**profiles.ATLAS, "seeds": [1]})
    assert (split.task, split.dataset, split.name, split.run_seeds) == ("batches", "synthetic_atlas_10k", "10pct_draw0", (1,))
    assert run.entries_for(split, profiles.ATLAS) == list(profiles.PEERS) and profiles.ATLAS["scib_tasks"] == []
    run.main(["--profile", "atlas", "--seeds", "2,3", "--plan"])
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(profiles.PEERS) and all("synthetic_atlas_10k" in line and line.endswith("  2 runs") for line in lines)


def test_try_options_holds_out_the_atlas_task_split():
    import try_options

    adata = atlas.generate(SMALL_ATLAS)
    adata.obs = adata.obs.rename(columns={"cell_type": TRUTH})
    split = try_options.split_for(adata, "batches", seed=5)
    expected = tasks.build(tasks.Split("batches", "small", "10pct_draw0", 0, ""), adata)
    assert np.array_equal(split.obs[ROLE].to_numpy(), expected.obs[ROLE].to_numpy())
    other = try_options.split_for(adata, "batches:20:1", seed=0)
    assert sorted(other.obs[BATCH][other.obs[ROLE] == "query"].unique()) == tasks.drawn_batches(adata, 0.2, 1)
