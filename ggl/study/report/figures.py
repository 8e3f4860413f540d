"""The report's figures (matplotlib on an Agg canvas; no pyplot state): PSNR against a
defense's strength, per defense setting an image grid (original vs each attack's
reconstruction) and the loss curves, each a PNG in memory.
"""
from __future__ import annotations

import io
import math
import re
import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ggl.study.report.records import Entry
from ggl.study.report.tables import line_label, ordered, replicate_labels

#: at most this many private images (rows) in one image grid
MAX_GRID_ROWS = 16


@dataclass
class Figure:
    """One PNG of the report: its file name, title, caption and bytes."""

    name: str
    title: str
    png: bytes
    caption: str = ""
    section: str = ""


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure as MplFigure

    figure = MplFigure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-.").lower()[:60] or "x"


def _colors(lines: Sequence[tuple]) -> dict:
    """One colour per attack (and setting), shared by its adaptive and non-adaptive lines."""
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf"]
    keys = ordered((attack, setting) for attack, _, setting in lines)
    return {key: palette[i % len(palette)] for i, key in enumerate(keys)}


def strength_figures(entries: Sequence[Entry]) -> list[Figure]:
    """PSNR against a defense parameter, for each family whose parameter takes >= 2 values.

    A family is a chain of defenses with the same names and options in which exactly one
    position's parameter varies (the others fixed): ``noise:sigma`` for single defenses,
    ``clipping:4 + noise:sigma`` for a chain.
    """
    from ggl.defenses import DEFENSES

    families: dict[tuple, dict] = {}
    for entry in entries:
        if entry.status != "done" or not entry.chain:
            continue
        shape = tuple((name, options) for name, _, options in entry.chain)
        params = [param for _, param, _ in entry.chain]
        for position in range(len(params)):
            key = (shape, position, tuple(params[:position] + params[position + 1:]))
            points = families.setdefault(key, {})
            points.setdefault(entry.line, {}).setdefault(params[position], []).append(
                entry.values.get("psnr"))
    baseline: dict[tuple, list] = {}
    for entry in entries:
        if entry.status == "done" and entry.defense == "none":
            baseline.setdefault((entry.attack, entry.setting), []).append(
                entry.values.get("psnr"))
    figures = []
    for (shape, position, fixed), points in families.items():
        xs = sorted({x for by_x in points.values() for x in by_x})
        if len(xs) < 2:
            continue
        name = shape[position][0]
        param_name = getattr(DEFENSES.get(name), "param_name", "parameter")
        fixed_params = list(fixed)
        parts = []
        for i, (defense_name, options) in enumerate(shape):
            suffix = "".join(f",{k}={v}" for k, v in options)
            value = param_name if i == position else f"{fixed_params.pop(0):g}"
            parts.append(f"{defense_name}:{value}{suffix}")
        title = " + ".join(parts)
        figure = _new_figure(6.4, 4.2)
        axes = figure.add_subplot()
        colors = _colors(list(points))
        plotted = False
        for line, by_x in points.items():
            color = colors[(line[0], line[2])]
            line_xs = [x for x in xs if x in by_x and any(v is not None for v in by_x[x])]
            means, stds = [], []
            for x in line_xs:
                values = [v for v in by_x[x] if v is not None]
                means.append(statistics.fmean(values))
                stds.append(statistics.stdev(values) if len(values) > 1 else 0.0)
            if not line_xs:
                continue
            plotted = True
            axes.errorbar(line_xs, means, yerr=stds, color=color, capsize=3,
                          linestyle="--" if line[1] else "-", marker="s" if line[1] else "o",
                          label=line_label(line))
        if not plotted:                      # every cell of the family has no PSNR
            continue
        for (attack, setting), values in baseline.items():
            present = [v for v in values if v is not None]
            key = (attack, setting)
            if present and key in colors:
                axes.axhline(statistics.fmean(present), color=colors[key], linestyle=":",
                             linewidth=1, label=f"{line_label((attack, False, setting))}, "
                                                f"no defense")
        if min(xs) > 0 and max(xs) / min(xs) >= 20:
            axes.set_xscale("log")
        axes.set_xlabel(f"{name} {param_name}")
        axes.set_ylabel("PSNR (dB), mean ± std")
        axes.set_title(f"PSNR vs {title}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.02, 0.5))
        figures.append(Figure(f"psnr-vs-{_slug(title)}.png", f"PSNR vs {title}",
                              _png(figure), "mean ± std over the private images and seeds; "
                              "dotted: the attack without a defense", "strength"))
    return figures


def _read_png(path: Path | None):
    if path is None:
        return None
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.asarray(image.convert("RGB"))
    except OSError:
        return None


def grid_figure(defense: str, entries: Sequence[Entry], labels: dict) -> Figure | None:
    """Original vs each attack's reconstruction under one defense setting, one row per
    private image (at most ``MAX_GRID_ROWS``)."""
    replicates = ordered(e.replicate for e in entries)[:MAX_GRID_ROWS]
    lines = ordered(e.line for e in entries)
    by_key = {(e.replicate, e.line): e for e in entries}
    if not any(e.image("reconstruction.png") for e in entries):
        return None
    columns = len(lines) + 1
    figure = _new_figure(1.7 * columns, 1.9 * len(replicates) + 0.8)
    for row, replicate in enumerate(replicates):
        original = next((e.image("original.png") for e in entries
                         if e.replicate == replicate and e.image("original.png")), None)
        tiles = [("original", _read_png(original), "")]
        for line in lines:
            entry = by_key.get((replicate, line))
            if entry is None:
                tiles.append((line_label(line), None, "not run"))
            elif entry.status != "done":
                tiles.append((line_label(line), None, "failed"))
            else:
                psnr, judge = entry.values.get("psnr"), entry.values.get("judge_accuracy")
                caption = "PSNR n/a" if psnr is None else f"{psnr:.1f} dB"
                if judge is not None:
                    caption += f", judge {judge:.0%}"
                tiles.append((line_label(line), _read_png(entry.image("reconstruction.png")),
                              caption))
        for column, (title, image, caption) in enumerate(tiles):
            axes = figure.add_subplot(len(replicates), columns, row * columns + column + 1)
            axes.set_xticks([])
            axes.set_yticks([])
            if image is not None:
                axes.imshow(image, interpolation="nearest")
            else:
                axes.text(0.5, 0.5, caption or "missing", ha="center", va="center",
                          transform=axes.transAxes, color="#b00")
                caption = ""
            if row == 0:                      # long settings would run into each other
                axes.set_title("\n".join(textwrap.wrap(title, 18)), fontsize=8)
            if column == 0:
                axes.set_ylabel(labels[replicate], fontsize=9)
            if caption:
                axes.set_xlabel(caption, fontsize=8)
    shown = len(replicates)
    total = len(ordered(e.replicate for e in entries))
    note = f" (first {shown} of {total} private images)" if shown < total else ""
    return Figure(f"grid-{_slug(defense)}.png", f"Reconstructions, defense {defense}",
                  _png(figure), f"rows: private images{note}; columns: the original, then "
                                f"each attack's reconstruction with its PSNR and judge accuracy", "grids")


def loss_figure(defense: str, entries: Sequence[Entry], labels: dict) -> Figure | None:
    """The loss histories under one defense setting: one panel per attack line, one curve
    per private image (log scale when every loss is positive)."""
    lines = [line for line in ordered(e.line for e in entries)
             if any(e.history for e in entries if e.line == line)]
    if not lines:
        return None
    columns = min(3, len(lines))
    rows = math.ceil(len(lines) / columns)
    figure = _new_figure(4.2 * columns, 3.0 * rows)
    for i, line in enumerate(lines):
        axes = figure.add_subplot(rows, columns, i + 1)
        positive = True
        for entry in entries:
            if entry.line != line or not entry.history:
                continue
            iterations, losses = entry.history
            positive &= min(losses) > 0
            axes.plot(iterations, losses, linewidth=1, label=labels[entry.replicate])
        if positive:
            axes.set_yscale("log")
        axes.set_title(line_label(line), fontsize=9)
        axes.set_xlabel("step (as recorded by the attack)", fontsize=8)
        axes.set_ylabel("gradient-matching loss", fontsize=8)
        axes.tick_params(which="both", labelsize=7)
        axes.grid(alpha=0.3)
        if len(axes.lines) <= 8:
            axes.legend(fontsize=7)
    figure.tight_layout()
    return Figure(f"loss-{_slug(defense)}.png", f"Loss curves, defense {defense}",
                  _png(figure), "the attack's own loss as recorded in run.json (downsampled "
                                "to at most 1000 points); scales differ between attacks",
                  "losses")


def all_figures(entries: Sequence[Entry]) -> list[Figure]:
    """Every figure of the report: strength plots, then per defense a grid and loss curves
    (file names made unique)."""
    figures = strength_figures(entries)
    labels = replicate_labels(entries)
    for defense in ordered(e.defense for e in entries):
        members = [e for e in entries if e.defense == defense]
        for build in (grid_figure, loss_figure):
            figure = build(defense, members, labels)
            if figure is not None:
                figures.append(figure)
    seen: set = set()
    for i, figure in enumerate(figures):
        if figure.name in seen:
            stem, _, suffix = figure.name.rpartition(".")
            figure.name = f"{stem}-{i}.{suffix}"
        seen.add(figure.name)
    return figures

