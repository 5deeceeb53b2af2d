"""Figures of the report, each returned as PNG bytes (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

import io

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 100
LEGEND_LIMIT = 30  # more categories than this get no legend: it would hide the plot
UNKNOWN_COLOUR = "#c8c8c8"  # unlabelled cells and "unknown" predictions
RARITY_COLOURS = {
    "rare (<1%)": "#d62728",
    "uncommon (1-10%)": "#ff7f0e",
    "common (>=10%)": "#1f77b4",
}


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def category_colours(categories, stored: list[str] | None = None) -> dict[str, str]:
    """A colour per category: the AnnData ``uns["<column>_colors"]`` ones when given, else tab10/tab20."""
    categories = list(categories)
    if stored is not None and len(stored) == len(categories):
        return dict(zip(categories, stored))
    palette = plt.get_cmap("tab10" if len(categories) <= 10 else "tab20")
    colours = [matplotlib.colors.to_hex(palette(i % palette.N)) for i in range(len(categories))]
    return dict(zip(categories, colours))


def training_curves(history: pd.DataFrame) -> bytes:
    """One panel per loss or validation metric of ``history.csv`` against the epoch, phases shaded.

    Epochs are counted across phases so the phases follow each other left to right.
    """
    values = [
        c
        for c in history.columns
        if c not in ("epoch", "phase") and pd.api.types.is_numeric_dtype(history[c])
    ]
    values = [c for c in values if history[c].notna().any()]
    step = np.arange(1, len(history) + 1)
    n_columns = min(3, max(1, len(values)))
    n_rows = int(np.ceil(len(values) / n_columns)) or 1
    fig, axes = plt.subplots(
        n_rows, n_columns, figsize=(4.2 * n_columns, 2.9 * n_rows), squeeze=False
    )
    phases = (
        history["phase"].astype(str).to_numpy()
        if "phase" in history
        else np.full(len(history), "training")
    )
    phase_names = list(dict.fromkeys(phases))
    shades = category_colours(phase_names)
    for axis, column in zip(axes.ravel(), values):
        for phase in phase_names:
            inside = np.flatnonzero(phases == phase)
            axis.axvspan(
                step[inside[0]] - 0.5,
                step[inside[-1]] + 0.5,
                color=shades[phase],
                alpha=0.12,
                linewidth=0,
            )
            axis.plot(
                step[inside],
                history[column].to_numpy()[inside],
                marker="o",
                markersize=2.5,
                color=shades[phase],
                label=phase,
            )
        axis.set_title(column, fontsize=10)
        axis.set_xlabel("epoch (all phases)", fontsize=8)
        axis.tick_params(labelsize=8)
    for axis in axes.ravel()[len(values) :]:
        axis.axis("off")
    handles = [plt.Line2D([], [], color=shades[p], marker="o", label=p) for p in phase_names]
    fig.tight_layout()
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(phase_names),
        title="phase",
        bbox_to_anchor=(0.5, 1.0),
        fontsize=9,
        frameon=False,
    )
    return _png(fig)


def embedding(
    coordinates: np.ndarray, values: pd.Series, title: str, colours: dict[str, str] | None = None
) -> bytes:
    """Cells on a 2-D embedding coloured by a categorical or a numeric column."""
    coordinates = np.asarray(coordinates)[:, :2]
    size = float(np.clip(12_000 / max(len(coordinates), 1), 0.5, 12))
    order = np.random.default_rng(0).permutation(
        len(coordinates)
    )  # no category painted over the others
    fig, axis = plt.subplots(figsize=(5.2, 4.2))
    if pd.api.types.is_numeric_dtype(values) and not isinstance(values.dtype, pd.CategoricalDtype):
        points = axis.scatter(
            *coordinates[order].T,
            c=values.to_numpy()[order],
            s=size,
            cmap="viridis",
            vmin=0,
            vmax=1,
            linewidths=0,
            rasterized=True,
        )
        fig.colorbar(points, ax=axis, fraction=0.046, label=values.name)
    else:
        labels = values.astype(str).to_numpy()
        categories = sorted(
            set(labels), key=lambda c: (colours is not None and colours.get(c) == UNKNOWN_COLOUR, c)
        )
        colours = colours or category_colours(categories)
        axis.scatter(
            *coordinates[order].T,
            c=[colours.get(v, "#bbbbbb") for v in labels[order]],
            s=size,
            linewidths=0,
            rasterized=True,
        )
        if len(categories) <= LEGEND_LIMIT:
            handles = [
                plt.Line2D(
                    [], [], linestyle="", marker="o", color=colours.get(c, "#bbbbbb"), label=c
                )
                for c in categories
            ]
            axis.legend(
                handles=handles,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
                fontsize=8,
            )
    axis.set_title(title)
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_xlabel("UMAP 1")
    axis.set_ylabel("UMAP 2")
    return _png(fig)


def composition_bars(shares: pd.DataFrame, title: str) -> bytes:
    """One stacked horizontal bar per group (rows of ``shares``), split by predicted type (columns, shares summing to 1)."""
    colours = category_colours(list(shares.columns))
    fig, axis = plt.subplots(figsize=(7.5, 1.2 + 0.35 * len(shares)))
    left = np.zeros(len(shares))
    for name in shares.columns:
        axis.barh(range(len(shares)), shares[name].to_numpy(), left=left, color=colours[name], label=str(name))
        left += shares[name].to_numpy()
    axis.set_yticks(range(len(shares)), [str(name) for name in shares.index], fontsize=8)
    axis.invert_yaxis()
    axis.set_xlim(0, 1)
    axis.set_xlabel("share of annotated cells")
    if len(shares.columns) <= LEGEND_LIMIT:
        axis.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=8)
    axis.set_title(title)
    return _png(fig)


def confusion_matrix(table: pd.DataFrame, title: str) -> bytes:
    """Row-normalised confusion matrix (true classes down, predictions across) with shares written in."""
    n_rows, n_columns = table.shape
    fig, axis = plt.subplots(figsize=(1.6 + 0.55 * n_columns + 1.5, 1.4 + 0.45 * n_rows + 1.2))
    image = axis.imshow(table.to_numpy(), cmap="Blues", vmin=0, vmax=1, aspect="auto")
    axis.set_xticks(range(n_columns), table.columns, rotation=45, ha="right", fontsize=8)
    axis.set_yticks(range(n_rows), table.index, fontsize=8)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    if n_rows * n_columns <= 900:
        for (row, column), value in np.ndenumerate(table.to_numpy()):
            if value >= 0.005:
                axis.text(
                    column,
                    row,
                    f"{value:.2f}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if value > 0.6 else "black",
                )
    fig.colorbar(image, ax=axis, fraction=0.046, label="share of the true class")
    axis.set_title(title)
    return _png(fig)


def f1_against_size(per_class: pd.DataFrame, title: str) -> bytes:
    """Per-class F1 against the number of evaluated cells of the class (log scale), classes named."""
    fig, axis = plt.subplots(figsize=(6.4, 4.2))
    for rarity, colour in RARITY_COLOURS.items():
        group = per_class[per_class["rarity"] == rarity]
        if len(group):
            axis.scatter(group["n_cells"], group["f1"], s=36, color=colour, label=rarity, zorder=3)
    # Alternate label heights so neighbouring classes of similar size and F1 stay readable.
    for rank, row in enumerate(per_class.sort_values("n_cells").itertuples()):
        axis.annotate(
            str(row[1]),
            (row.n_cells, row.f1),
            textcoords="offset points",
            xytext=(4, 4 if rank % 2 else -10),
            fontsize=7,
        )
    sizes = per_class["n_cells"]
    if sizes.max() > 10 * sizes.min():
        axis.set_xscale("log")
        axis.xaxis.set_major_formatter(
            matplotlib.ticker.FuncFormatter(lambda value, _: f"{value:,.0f}")
        )
        axis.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    axis.set_xlim(sizes.min() / 1.3 if sizes.max() > 10 * sizes.min() else 0, sizes.max() * 1.3)
    axis.set_ylim(-0.03, 1.05)
    axis.set_xlabel("cells of the class (evaluated)")
    axis.set_ylabel("F1")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, title="class rarity", title_fontsize=8, loc="lower right")
    axis.set_title(title)
    return _png(fig)


def marker_dotplot(fraction: pd.DataFrame, mean: pd.DataFrame, title: str) -> bytes:
    """Dot plot: predicted types down, marker genes across; dot size = share of cells expressing,
    colour = mean expression scaled to 0-1 per gene."""
    n_rows, n_columns = fraction.shape
    scaled = mean / mean.max(axis=0).replace(0, 1)
    fig, axis = plt.subplots(figsize=(2.4 + 0.32 * n_columns, 1.4 + 0.36 * n_rows))
    rows, columns = np.meshgrid(np.arange(n_rows), np.arange(n_columns), indexing="ij")
    points = axis.scatter(
        columns.ravel(),
        rows.ravel(),
        s=(fraction.to_numpy().ravel() * 120) + 0.5,
        c=scaled.to_numpy().ravel(),
        cmap="Reds",
        vmin=0,
        vmax=1,
        edgecolors="grey",
        linewidths=0.3,
    )
    axis.set_xticks(range(n_columns), fraction.columns, rotation=90, fontsize=7)
    axis.set_yticks(range(n_rows), fraction.index, fontsize=8)
    axis.set_xlim(-0.6, n_columns - 0.4)
    axis.set_ylim(n_rows - 0.4, -0.6)
    axis.set_xlabel("marker genes (ranked on the labelled reference cells)")
    axis.set_ylabel("predicted type")
    fig.colorbar(points, ax=axis, fraction=0.046, label="mean expression (scaled per gene)")
    axis.set_title(title)
    return _png(fig)


def optimisation_history(trial: np.ndarray, score: np.ndarray) -> bytes:
    """The score of each trial against its number, and the best score so far as a step line."""
    fig, axis = plt.subplots(figsize=(6.5, 3.4))
    axis.plot(trial, score, "o", markersize=4, label="trial")
    axis.step(trial, np.maximum.accumulate(score), where="post", color="#d62728", label="best so far")
    axis.set_xlabel("trial")
    axis.set_ylabel("score")
    axis.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    axis.legend(frameon=False)
    return _png(fig)


def param_importances(importances: dict[str, float]) -> bytes:
    """One horizontal bar per parameter, the most important on top."""
    names = list(importances)[::-1]
    fig, axis = plt.subplots(figsize=(6.5, 0.9 + 0.3 * len(names)))
    axis.barh(names, [float(importances[name]) for name in names], color="#24476b")
    axis.set_xlabel("importance")
    return _png(fig)
