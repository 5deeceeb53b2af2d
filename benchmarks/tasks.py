"""The benchmark tasks: how each dataset is cut into reference (labelled) and query cells.

A *split* is the dataset's AnnData with four obs columns added (see ``methods.py``):
``bench_label`` (what methods may learn from), ``bench_truth``, ``bench_role`` and
``bench_evaluated`` (the cells scored for accuracy). Every split is fully determined by its
name and seed. Query cells of a type the reference lacks are not scored for accuracy (no
method can name them) but for rejection: ``scoring.novelty_scores``.

The datasets are the real ones in ``shared/data`` and one SYNTHETIC atlas (``atlas.py``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import atlas
from common import BATCH, EVALUATED, LABEL, ROLE, TRUTH, UNKNOWN


def _data_dir() -> Path:
    """``shared/data`` beside the repository (or beside the folder of git worktrees); ``SCPERMUT_SHARED_DATA`` overrides."""
    if os.environ.get("SCPERMUT_SHARED_DATA"):
        return Path(os.environ["SCPERMUT_SHARED_DATA"])
    candidates = [parent / "shared" / "data" for parent in Path(__file__).resolve().parents[2:4]]
    return next((folder for folder in candidates if folder.is_dir()), candidates[0])


DATA_DIR = _data_dir()


@dataclass(frozen=True)
class Dataset:
    name: str
    file: str
    label_column: str

    def load(self, data_dir: Path = DATA_DIR):
        import anndata as ad
        import scipy.sparse as sp

        adata = ad.read_h5ad(Path(data_dir) / self.file)
        adata.X = sp.csr_matrix(adata.X, dtype=np.float32)
        adata.obs = pd.DataFrame(
            {TRUTH: adata.obs[self.label_column].astype(str).to_numpy(), BATCH: adata.obs["batch"].astype(str).to_numpy()},
            index=adata.obs_names,
        )
        adata.obs_names_make_unique()
        return adata

    def digest(self, data_dir: Path = DATA_DIR) -> str:
        """SHA-256 of the dataset file: what decides its cells."""
        from cache import file_sha256

        return file_sha256(Path(data_dir) / self.file)


@dataclass(frozen=True)
class SyntheticDataset:
    """A SYNTHETIC atlas (``atlas.py``), generated once per parameters and cached."""

    name: str
    params: atlas.AtlasParams

    def load(self):
        adata = atlas.cached(self.params)
        adata.obs = pd.DataFrame({TRUTH: adata.obs["cell_type"].astype(str).to_numpy(), BATCH: adata.obs["batch"].astype(str).to_numpy()}, index=adata.obs_names)
        return adata

    def digest(self) -> str:
        return atlas.params_digest(self.params)


DATASETS = {
    "kang_pbmc": Dataset("kang_pbmc", "muscat_kang_pbmc.h5ad", "cell_type"),
    "cellbench_3cl": Dataset("cellbench_3cl", "cellbench_3cl_3tech.h5ad", "cell_line"),
    "mixology_5batch": Dataset("mixology_5batch", "cellbench_mixology_5batch.h5ad", "cell_line"),
    # 40 types, 50 batches: 30,000 cells for the ranking profiles, 4,000 for --quick.
    "synthetic_atlas": SyntheticDataset("synthetic_atlas", atlas.AtlasParams()),
    "synthetic_atlas_small": SyntheticDataset("synthetic_atlas_small", atlas.AtlasParams(n_cells=4000)),
    # 10,000 cells (same 40 types, 50 batches): the atlas task with scANVI in the same run within an hour on one core.
    "synthetic_atlas_10k": SyntheticDataset("synthetic_atlas_10k", atlas.AtlasParams(n_cells=10_000)),
}


@dataclass(frozen=True)
class Split:
    """One train/score cut of one dataset."""

    task: str
    dataset: str
    name: str
    seed: int
    description: str
    # The type cut to ~1 % (rare task) or removed from the reference (novel task).
    rare_type: str | None = None
    # The seeds every method runs with on this split (each seed one run: the spread is seed-to-seed).
    run_seeds: tuple[int, ...] = (0,)

    @property
    def id(self) -> str:
        return f"{self.task}__{self.dataset}__{self.name}"

    @property
    def setting(self) -> str:
        """What the split varies apart from seeds: the held-out batch(es), the labelled share, the rare or novel type."""
        if self.task == "partial":
            return self.name.split("_seed")[0]
        if self.task in ("rare", "novel"):
            return str(self.rare_type)
        return self.name

    def fields(self) -> dict:
        """The definition of the split (what decides its cells and labels), for cache keys."""
        return {"task": self.task, "dataset": self.dataset, "name": self.name, "seed": self.seed, "rare_type": self.rare_type}


def _annotate(adata, labelled: np.ndarray, query: np.ndarray, evaluated: np.ndarray):
    adata = adata.copy()
    truth = adata.obs[TRUTH].to_numpy()
    adata.obs[LABEL] = np.where(labelled & ~query, truth, UNKNOWN)
    adata.obs[ROLE] = np.where(query, "query", "reference")
    adata.obs[EVALUATED] = evaluated
    return adata


def leave_batches_out(adata, batches):
    """Every cell of ``batches`` is the unlabelled query; all other cells are the labelled reference.

    Scored for accuracy: query cells whose type occurs in the reference (a type never seen
    cannot be named); the others for rejection.
    """
    query = adata.obs[BATCH].isin(list(batches)).to_numpy()
    truth = adata.obs[TRUTH].to_numpy()
    seen = np.isin(truth, np.unique(truth[~query]))
    return _annotate(adata, ~query, query, query & seen)


def leave_one_batch_out(adata, batch: str):
    """:func:`leave_batches_out` of one batch."""
    return leave_batches_out(adata, [batch])


def drawn_batches(adata, share: float, draw: int) -> list[str]:
    """A seeded ``share`` of the batches (at least one), sorted: the query of a leave-batches-out split."""
    batches = sorted(adata.obs[BATCH].unique())
    n_query = max(1, int(round(share * len(batches))))
    return sorted(np.random.default_rng(draw).choice(batches, size=n_query, replace=False).tolist())


def _batch_holding_most(truth: np.ndarray, batches: np.ndarray, cell_type: str) -> str:
    """The batch with most cells of ``cell_type`` (ties: the first by name)."""
    return pd.Series(batches[truth == cell_type]).value_counts().sort_index().idxmax()


def novel_type(adata, cell_type: str):
    """``cell_type`` is removed from the reference and kept in the query, the batch holding most of it.

    Every other batch is the labelled reference, without its ``cell_type`` cells (dropped).
    Scored: the query's known-type cells for accuracy and false rejection, its ``cell_type``
    cells (and any other type the reference lacks) for novel recall.
    """
    truth = adata.obs[TRUTH].to_numpy()
    batches = adata.obs[BATCH].to_numpy()
    query_batch = _batch_holding_most(truth, batches, cell_type)
    keep = (batches == query_batch) | (truth != cell_type)
    split = leave_one_batch_out(adata[keep].copy(), query_batch)
    split.uns["bench_novel"] = {"type": cell_type, "query_batch": str(query_batch)}
    return split


def partial_atlas(adata, fraction: float, seed: int):
    """All batches together; a seeded ``fraction`` of each cell type labelled (at least 2 cells).

    Scored: every unlabelled cell.
    """
    rng = np.random.default_rng(seed)
    truth = adata.obs[TRUTH].to_numpy()
    labelled = np.zeros(adata.n_obs, dtype=bool)
    for label in np.unique(truth):
        members = np.flatnonzero(truth == label)
        n_labelled = max(2, int(round(fraction * members.size)))
        labelled[rng.choice(members, size=n_labelled, replace=False)] = True
    return _annotate(adata, labelled, np.zeros(adata.n_obs, dtype=bool), ~labelled)


def rare_type(adata, cell_type: str, seed: int, share: float = 0.01):
    """One batch is the query; in the reference, ``cell_type`` is cut (seeded) to just under ``share`` of cells.

    The query batch is the one holding most cells of ``cell_type``; cells removed from the
    reference are dropped altogether. Scored: query cells of reference types.
    """
    truth = adata.obs[TRUTH].to_numpy()
    batches = adata.obs[BATCH].to_numpy()
    query_batch = _batch_holding_most(truth, batches, cell_type)
    query = batches == query_batch
    rare_reference = np.flatnonzero(~query & (truth == cell_type))
    n_others = int((~query & (truth != cell_type)).sum())
    n_keep = max(2, int(share * n_others / (1 - share)))  # rounded down: stays under ``share``
    keep = np.ones(adata.n_obs, dtype=bool)
    dropped = np.random.default_rng(seed).choice(rare_reference, size=max(0, rare_reference.size - n_keep), replace=False)
    keep[dropped] = False
    adata = adata[keep].copy()
    query = query[keep]
    truth = truth[keep]
    seen = np.isin(truth, np.unique(truth[~query]))
    split = _annotate(adata, ~query, query, query & seen)
    split.uns["bench_rare"] = {"type": cell_type, "query_batch": str(query_batch), "n_reference": int(min(n_keep, rare_reference.size))}
    return split


def build(split: Split, adata):
    """The AnnData of ``split`` from its dataset's AnnData."""
    if split.task == "lobo":
        return leave_one_batch_out(adata, split.name)
    if split.task == "partial":
        fraction = float(split.name.split("pct")[0]) / 100
        return partial_atlas(adata, fraction, split.seed)
    if split.task == "rare":
        return rare_type(adata, split.rare_type, split.seed)
    if split.task == "novel":
        return novel_type(adata, split.rare_type)
    if split.task == "batches":
        share = float(split.name.split("pct")[0]) / 100
        return leave_batches_out(adata, drawn_batches(adata, share, split.seed))
    raise ValueError(f"unknown task {split.task}")


def plan(profile: dict) -> list[Split]:
    """Every split of the run, from the profile's datasets, fractions, seeds and limits."""
    splits = []
    for name in profile["datasets"]:
        adata = DATASETS[name].load()
        if isinstance(DATASETS[name], SyntheticDataset):
            # The SYNTHETIC atlas runs its own task only: a seeded share of its batches held out.
            for draw in profile["atlas_draws"]:
                share = profile["atlas_query_share"]
                splits.append(Split("batches", name, f"{share}pct_draw{draw}", draw, f"query = {share}% of the batches, draw {draw} (SYNTHETIC atlas)", run_seeds=tuple(profile["seeds"])))
            continue
        batches = sorted(adata.obs[BATCH].unique())
        # Smallest types first: the natural candidates for the rare-type task.
        types = adata.obs[TRUTH].value_counts().sort_index().sort_values(kind="stable").index.tolist()
        seeds = tuple(profile["seeds"])
        if "lobo" in profile["tasks"]:
            for batch in batches[: profile["max_batches"]]:
                splits.append(Split("lobo", name, batch, 0, f"query = batch {batch}", run_seeds=seeds))
        if "partial" in profile["tasks"] and name in profile["partial_datasets"]:
            # The seed draws the labelled cells and seeds the method: one run per seed and fraction.
            for fraction in profile["fractions"]:
                for seed in seeds:
                    splits.append(Split("partial", name, f"{fraction}pct_seed{seed}", seed, f"{fraction}% of each type labelled, seed {seed}", run_seeds=(seed,)))
        if "rare" in profile["tasks"] and name in profile["rare_datasets"]:
            for cell_type in types[: profile["max_rare_types"]]:
                for seed in profile["rare_seeds"]:
                    label = cell_type.replace(" ", "_").replace("+", "p")
                    splits.append(Split("rare", name, f"{label}_seed{seed}", seed, f"{cell_type} cut to ~1% of the reference, seed {seed}", cell_type, run_seeds=seeds))
        if "novel" in profile["tasks"]:
            for cell_type in sorted(types)[: profile.get("max_novel_types")]:
                label = cell_type.replace(" ", "_").replace("+", "p")
                splits.append(Split("novel", name, label, 0, f"{cell_type} absent from the reference, kept in the query", cell_type, run_seeds=seeds))
    return splits
