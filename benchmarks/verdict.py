"""Mean ± sd over seeds, and the rule that turns them into a verdict against the best peer.

The spread is seed-to-seed: for each seed, a method's score is averaged over the splits of a
task and dataset (held-out batches, labelled shares, rare types); the mean and the sample
standard deviation are then taken over those per-seed averages.

Rule (stated on the page): with ``gap = scpermut mean − best peer mean`` and
``spread = the larger of the two seed-to-seed sds``:

- **met** when ``gap > spread``;
- **tie** when ``|gap| ≤ spread`` (the difference is inside the noise);
- **missed** when ``gap < −spread``;
- **no verdict** with fewer than ``MIN_SEEDS`` seeds for either method (no spread to judge by).
"""

from __future__ import annotations

import math

import pandas as pd

MIN_SEEDS = 2
RULE = (
    "met when scpermut's mean exceeds the best peer's by more than the larger of their seed-to-seed sds; "
    "tie when the two means are within that sd; missed when scpermut is lower by more than it; "
    f"no verdict with fewer than {MIN_SEEDS} seeds"
)


def seed_summary(frame: pd.DataFrame, metric: str, by: list[str]) -> pd.DataFrame:
    """Per ``by`` group: ``mean``, ``sd`` (ddof 1) and ``n_seeds`` of ``metric`` averaged over splits within each seed."""
    per_seed = frame.dropna(subset=[metric]).groupby([*by, "seed"])[metric].mean()
    grouped = per_seed.groupby(level=list(range(len(by))))
    return pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1), "n_seeds": grouped.size()})


def verdict(ours_mean: float, ours_sd: float, ours_seeds: int, best_mean: float, best_sd: float, best_seeds: int) -> str:
    """``met`` / ``tie`` / ``missed`` / ``no verdict`` by the module's rule."""
    if min(ours_seeds, best_seeds) < MIN_SEEDS or any(math.isnan(x) for x in (ours_mean, ours_sd, best_mean, best_sd)):
        return "no verdict"
    gap, spread = ours_mean - best_mean, max(ours_sd, best_sd)
    if gap > spread:
        return "met"
    if gap < -spread:
        return "missed"
    return "tie"


def compare(frame: pd.DataFrame, metric: str, ours: str, peers: list[str]) -> dict | None:
    """``ours`` against the peer of highest mean in ``frame`` (one task and dataset): numbers and verdict."""
    summary = seed_summary(frame[frame["method"].isin([ours, *peers])], metric, ["method"])
    if ours not in summary.index:
        return None
    present = [peer for peer in peers if peer in summary.index]
    if not present:
        return None
    best = summary.loc[present, "mean"].idxmax()
    a, b = summary.loc[ours], summary.loc[best]
    return {
        "ours": (float(a["mean"]), float(a["sd"]), int(a["n_seeds"])),
        "best_peer": best,
        "best": (float(b["mean"]), float(b["sd"]), int(b["n_seeds"])),
        "verdict": verdict(a["mean"], a["sd"], int(a["n_seeds"]), b["mean"], b["sd"], int(b["n_seeds"])),
    }
