"""PNG charts with matplotlib's Agg backend (no display needed): grouped bars with interval error bars,
and lines against k with interval bands. Written atomically; PNG metadata carries no timestamp or
version, so the same numbers give the same bytes on the same matplotlib."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # before pyplot: stages and tests run without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .io import atomic_path  # noqa: E402

_METADATA = {"Software": None}
_DPI = 120


def _save(fig, path: str | os.PathLike[str]) -> None:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=_DPI, bbox_inches="tight", metadata=_METADATA)
    plt.close(fig)


def grouped_bar_chart(
    path: str | os.PathLike[str],
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    intervals: Mapping[str, Sequence[tuple[float, float]]] | None = None,
    *,
    title: str = "",
    ylabel: str = "",
    ylim: tuple[float, float] | None = (0.0, 1.0),
    value_labels: bool = True,
    percent: bool = True,
) -> None:
    """One cluster of bars per group (e.g. evaluation set), one bar per series (e.g. arm) in each.

    `series[name][g]` is the value of series `name` in group g (NaN leaves a gap); `intervals[name][g]`
    an optional (low, high) drawn as an error bar.
    """
    names = list(series)
    colour_of = _colours(names)
    n_groups, n_series = len(groups), max(len(names), 1)
    width = 0.8 / n_series
    x = np.arange(n_groups)
    fig, ax = plt.subplots(figsize=(max(5.0, 1.6 + 1.1 * n_groups * n_series * 0.6), 4.0))
    for j, name in enumerate(names):
        values = np.asarray(series[name], dtype=float)
        offsets = x - 0.4 + width * (j + 0.5)
        yerr = None
        if intervals and name in intervals:
            lohi = np.asarray(intervals[name], dtype=float).reshape(-1, 2)
            yerr = np.abs(np.vstack([values - lohi[:, 0], lohi[:, 1] - values]))
        bars = ax.bar(
            offsets,
            values,
            width * 0.92,
            yerr=yerr,
            capsize=3,
            label=name,
            color=colour_of[name],
            error_kw={"elinewidth": 1, "alpha": 0.8},
        )
        if value_labels:
            labels = [("" if np.isnan(v) else (f"{v:.0%}" if percent else f"{v:.3g}")) for v in values]
            ax.bar_label(bars, labels=labels, label_type="center", fontsize=8, color="white")
    ax.set_xticks(x, list(groups))
    if ylim is not None:
        ax.set_ylim(ylim[0], ylim[1] + 0.03 * (ylim[1] - ylim[0]))  # room for error caps at the top
    if percent:
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    _save(fig, path)


def lines_against_k(
    path: str | os.PathLike[str],
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    ks: Sequence[int],
    bands: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float]]]] | None = None,
    *,
    ylabel: str = "hit rate",
    title: str = "",
    xlabel: str = "k",
    log_x: bool = True,
) -> None:
    """One panel per entry of `panels` (e.g. test, validation), one line per series (e.g. arm) against k
    (or any x: `xlabel`, `log_x`), with an optional shaded (low, high) band per series."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), sharey=True, squeeze=False)
    colour_of = _colours({name for s in panels.values() for name in s})
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, values in series.items():
            ax.plot(ks, values, marker="o", markersize=3, label=name, color=colour_of[name])
            if bands and panel in bands and name in bands[panel]:
                lo, hi = bands[panel][name]
                ax.fill_between(ks, lo, hi, alpha=0.15, color=colour_of[name], linewidth=0)
        if log_x:
            ax.set_xscale("log")
            ax.set_xticks(list(ks) if len(ks) <= 8 else [k for k in (1, 2, 3, 5, 10, 20, 50, 100) if k <= max(ks)])
            ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        else:
            ax.set_xticks(list(ks))
        ax.yaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
        _label_panel(ax, xlabel, panel)
    _finish_panels(fig, axes, path, ylabel, title)


def _label_panel(ax, xlabel: str, panel: str, ylim: tuple[float, float] = (0.0, 1.0)) -> None:
    ax.set_ylim(*ylim)
    ax.set_xlabel(xlabel)
    ax.set_title(panel)
    ax.grid(alpha=0.3)


def _finish_panels(fig, axes, path: str | os.PathLike[str], ylabel: str, title: str) -> None:
    axes[0][0].set_ylabel(ylabel)
    axes[0][-1].legend(frameon=False, loc="lower right")
    if title:
        fig.suptitle(title)
    _save(fig, path)


XY = tuple[Sequence[float], Sequence[float]]


def xy_panels(
    path: str | os.PathLike[str],
    panels: Mapping[str, Mapping[str, XY]],
    bands: Mapping[str, Mapping[str, tuple[Sequence[float], Sequence[float], Sequence[float]]]] | None = None,
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    ylim: tuple[float, float] = (0.0, 1.0),
) -> None:
    """One panel per entry of `panels`, one line per series with its own x values ((xs, ys)), and an
    optional shaded band per series ((xs, low, high)); y over `ylim` (0 to 1). Series named `cosine`/`bm25`
    are drawn dashed (flat reference lines)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.0), squeeze=False)
    colour_of = _colours({name for s in panels.values() for name in s})
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, (xs, ys) in series.items():
            flat = name.split(" ")[0] in ("cosine", "bm25")
            ax.plot(xs, ys, "--" if flat else "-o", markersize=3, label=name, color=colour_of[name])
            if bands and panel in bands and name in bands[panel]:
                bx, lo, hi = bands[panel][name]
                ax.fill_between(bx, lo, hi, alpha=0.15, color=colour_of[name], linewidth=0)
        _label_panel(ax, xlabel, panel, ylim)
    _finish_panels(fig, axes, path, ylabel, title)


def _colours(names) -> dict[str, str]:
    """The same name gets the same colour in every chart of a run."""
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {name: cycle[i % len(cycle)] for i, name in enumerate(sorted(names, key=_order))}


def _order(name: str) -> tuple[int, str]:
    # Stable colours across charts: the usual arms first, in a fixed order.
    known = ["cosine", "adapter", "linear", "bm25"]
    return (known.index(name) if name in known else len(known), name)
