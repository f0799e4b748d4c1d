"""The report's figures, drawn with matplotlib's Agg canvas into PNG files: 2-D maps (PCA,
t-SNE) of the test embeddings, the kNN probe's score against k, training curves, and the score
against shots of few-shot runs."""

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from hear_contrastune.comparison.report.geometry import TaskEmbeddings
from hear_contrastune.comparison.report.load import TrainingLog
from hear_contrastune.comparison.results import Record, task_scores
from hear_contrastune.comparison.run_layout import SHORT_TITLES, method_key, score_key
from hear_contrastune.data.shots import ALL_SHOTS

DPI = 100
METHOD_COLORS = {"frozen": "tab:gray", "finetune": "tab:orange", "lpft": "tab:green",
                 "contrastive": "tab:blue"}
EXTRA_COLORS = ("tab:red", "tab:purple", "tab:brown", "tab:pink", "tab:olive")


def method_color(method: str, methods: Sequence[str]) -> str:
    """The same colour for a method in every figure."""
    others = [m for m in methods if m not in METHOD_COLORS]
    return METHOD_COLORS.get(method) or EXTRA_COLORS[others.index(method) % len(EXTRA_COLORS)]


def new_figure(width: float, height: float) -> Figure:
    """A figure on the Agg canvas, outside pyplot (no global state, nothing to close)."""
    fig = Figure(figsize=(width, height), layout="constrained", dpi=DPI)
    FigureCanvasAgg(fig)
    return fig


def class_colors(n_classes: int) -> np.ndarray:
    """Distinct colours for up to 20 classes; a continuous colormap beyond."""
    if n_classes <= 10:
        return colormaps["tab10"](np.arange(n_classes))
    if n_classes <= 20:
        return colormaps["tab20"](np.arange(n_classes))
    return colormaps["turbo"](np.linspace(0, 1, n_classes))


def plot_projections(summary: TaskEmbeddings, task: str, path: Path, tsne: bool = False) -> None:
    """One scatter panel per method, clips coloured by class (for multilabel: by their first
    label in vocabulary order; clips without labels in light grey). PCA, or with `tsne` the
    t-SNE map: the same clips in the same colours, so the two figures read side by side."""
    methods = list(summary.projections)
    fig = new_figure(4.2 * len(methods), 4.6)
    axes = fig.subplots(1, len(methods), squeeze=False)[0]
    colors = class_colors(len(summary.vocabulary))
    shown: set[int] = set()
    unlabelled = False
    for ax, method in zip(axes, methods, strict=True):
        proj = summary.projections[method]
        coords = proj.tsne if tsne else proj.coords
        has_label = proj.labels.any(axis=1)
        cls = proj.labels.argmax(axis=1)
        if not has_label.all():
            unlabelled = True
            ax.scatter(*coords[~has_label].T, s=6, color="lightgrey", linewidths=0)
        for c in np.unique(cls[has_label]):
            pts = coords[has_label & (cls == c)]
            ax.scatter(*pts.T, s=8, alpha=0.75, color=colors[c], linewidths=0)
            shown.add(int(c))
        what = "t-SNE" if tsne else f"PCA keeps {proj.variance:.0%}"
        ax.set_title(f"{method} (seed {proj.seed}): {what}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    if len(summary.vocabulary) <= 20:  # beyond, a legend would hide the plot
        entries = [(colors[c], summary.vocabulary[c]) for c in sorted(shown)]
        entries += [("lightgrey", "(no label)")] * unlabelled
        handles = [Line2D([], [], marker="o", linestyle="", color=color, label=label)
                   for color, label in entries]
        fig.legend(handles=handles, loc="outside lower center", ncols=min(10, len(handles)),
                   fontsize=8, frameon=False)
    fig.suptitle(f"{task}: test embeddings", fontsize=11)
    fig.savefig(path, format="png")


def plot_knn_curves(summary: TaskEmbeddings, task: str, path: Path) -> None:
    """Validation score against k per method: mean over seeds, ± std band when there are
    several. A curve that rises with k means labels agree only over wide neighbourhoods."""
    methods = list(summary.knn_curves)
    fig = new_figure(6, 4)
    ax = fig.subplots()
    all_ks: set[int] = set()
    for i, method in enumerate(methods):
        curves = summary.knn_curves[method]
        ks = sorted(set.intersection(*(set(c) for c in curves)))
        all_ks |= set(ks)
        vals = np.array([[c[k] for k in ks] for c in curves])
        mean = vals.mean(axis=0)
        color = method_color(method, methods)
        label = f"{method} ({len(curves)} run{'s' * (len(curves) > 1)})"
        # shrinking markers of distinct shapes keep a curve visible under an equal one
        ax.plot(ks, mean, marker="osD^v"[i % 5], markersize=max(3, 10 - 2 * i), alpha=0.85,
                color=color, label=label)
        if len(curves) > 1:
            std = vals.std(axis=0, ddof=1)
            ax.fill_between(ks, mean - std, mean + std, color=color, alpha=0.2, linewidth=0)
    ax.set_xscale("log")
    ax.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
    ax.minorticks_off()
    ax.set_xlabel("k (neighbours)")
    ax.set_ylabel(f"validation {summary.knn_metric}")
    ax.set_title(f"{task}: kNN probe, validation score vs k", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, format="png")


def plot_training(by_method: dict[str, list[TrainingLog]], task: str, path: Path) -> None:
    """Per tuned method: loss (per step, faint; per epoch, bold) and validation score against
    epoch. Methods get their own panels: their losses and validation scores differ in kind."""
    methods = list(by_method)
    fig = new_figure(10, 3.2 * len(methods))
    axes = fig.subplots(len(methods), 2, squeeze=False)
    for (loss_ax, valid_ax), method in zip(axes, methods, strict=True):
        color = method_color(method, methods)
        for i, log in enumerate(by_method[method]):
            style = ("-", "--", ":", "-.")[i % 4]
            if "loss" in log.steps and len(log.steps["loss"]):
                loss_ax.plot(step_epochs(log.steps["epoch"]), log.steps["loss"], color=color,
                             alpha=0.25, linewidth=0.8)
            if "loss" in log.epochs:
                loss_ax.plot(log.epochs["epoch"], log.epochs["loss"], style, marker="o",
                             color=color, label=log.name)
            scored = np.isfinite(log.epochs[log.valid_column]) if log.valid_column else []
            for column in log.valid_columns:  # the scored epochs (--select-every), joined
                selects = column == log.valid_column  # the others are drawn with crosses
                valid_ax.plot(log.epochs["epoch"][scored], log.epochs[column][scored], style,
                              color=color,
                              marker="o" if selects else "x",
                              label=log.name + ("" if selects else f": {column}"))
        names = sorted({c for log in by_method[method] for c in log.valid_columns})
        loss_ax.set_title(f"{method}: training loss (faint: per step)", fontsize=10)
        valid_ax.set_title(f"{method}: {', '.join(names) or 'no validation column'}",
                           fontsize=10)
        for ax in (loss_ax, valid_ax):
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            if ax.get_legend_handles_labels()[0]:
                ax.legend(fontsize=8)
    fig.suptitle(f"{task}: training curves", fontsize=11)
    fig.savefig(path, format="png")


def step_epochs(epochs: np.ndarray) -> np.ndarray:
    """Each step's position in epochs: step i of n in epoch e sits at e - 1 + (i + 1) / n, so
    an epoch's steps lead up to its per-epoch point at x = e."""
    out = np.empty(len(epochs))
    for e in np.unique(epochs):
        at = np.flatnonzero(epochs == e)
        out[at] = e - 1 + np.arange(1, len(at) + 1) / len(at)
    return out


def plot_shots(records: list[Record], task: str, path: Path) -> None:
    """Score against shots (train clips per class; all of them at the right), one panel per
    probe, one line per method: mean over seeds with ± std error bars. A k-fold task's score is
    its fold mean."""
    recs = [r for r in task_scores(records) if r.task == task]
    probes = sorted({r.probe for r in recs}, key=score_key)
    shots = sorted({r.shots for r in recs}, key=lambda s: s or math.inf)  # 0 (all) last
    methods = sorted({r.method for r in recs}, key=method_key)
    fig = new_figure(4.5 * len(probes), 3.8)
    axes = fig.subplots(1, len(probes), squeeze=False)[0]
    for ax, probe in zip(axes, probes, strict=True):
        for i, method in enumerate(methods):
            xs, means, stds = [], [], []
            for x, s in enumerate(shots):
                vals = [r.score for r in recs if (r.probe, r.method, r.shots) == (probe, method, s)
                        and math.isfinite(r.score)]
                if vals:
                    xs.append(x)
                    means.append(float(np.mean(vals)))
                    stds.append(float(np.std(vals, ddof=1)) if len(vals) > 1 else 0.0)
            if xs:
                ax.errorbar(xs, means, yerr=stds, marker="osD^v"[i % 5], capsize=3,
                            color=method_color(method, methods), label=method)
        ax.set_xticks(range(len(shots)), ["all" if s == ALL_SHOTS else str(s) for s in shots])
        ax.set_xlabel("train clips per class")
        ax.set_title(f"{SHORT_TITLES.get(probe, probe)} probe", fontsize=10)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.suptitle(f"{task}: test score vs shots", fontsize=11)
    fig.savefig(path, format="png")
