"""The report's tables: entries grouped into summary rows (one per attack line under one
defense setting, pooling private images and seeds), the summary and search-stages tables
as header + rows of strings (shared by the Markdown and the HTML), and the labels of lines
and private images that the figures and pages reuse.
"""
from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from ggl.study.report.records import Entry


@dataclass
class Column:
    """One statistic of the summary table: a record field, its header, digits and scale."""

    key: str
    header: str
    digits: int
    scale: float = 1.0


#: the summary table's statistics, in order
COLUMNS = (
    Column("psnr", "PSNR (dB)", 2),
    Column("ssim", "SSIM", 3),
    Column("lpips", "LPIPS", 3),
    Column("judge_accuracy", "judge (%)", 1, 100.0),
    Column("identifiability", "identif. (%)", 1, 100.0),
    Column("label_accuracy", "labels (%)", 1, 100.0),
    Column("ceiling_psnr", "ceiling (dB)", 2),
    Column("search_gap", "search gap", 3),
    Column("attack_wall_time_s", "attack time (s)", 2),
    Column("evaluations", "evaluations", 0),
)
#: the control's statistics shown beside each attack (when the store has control cells),
#: and the leaks: attack - control, paired by private image and seed
CONTROL_COLUMNS = (
    Column("psnr", "control PSNR (dB)", 2),
    Column("judge_accuracy", "control judge (%)", 1, 100.0),
    Column("identifiability", "control identif. (%)", 1, 100.0),
)
LEAK_COLUMNS = (
    Column("psnr", "leak PSNR (dB)", 2),
    Column("judge_accuracy", "leak judge (points)", 1, 100.0),
    Column("identifiability", "leak identif. (points)", 1, 100.0),
)


def line_label(line: tuple) -> str:
    """``ig``, ``ig adaptive``, ``ggl adaptive budget=500``: one attack line."""
    attack, adaptive, setting = line
    parts = [attack] + (["adaptive"] if adaptive else [])
    return " ".join(parts + ([setting_text(setting)] if setting_text(setting) else []))


def setting_text(setting: tuple) -> str:
    """``budget=500 search=CMA:500``: the settings that are set (an unset one, a field other
    cells of the attack set, is left out of the text but still tells the rows apart)."""
    return " ".join(f"{key}={_short(value)}" for key, value in setting if value is not None)


def _short(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def ordered(items: Iterable) -> list:
    """Unique items in first-seen order."""
    return list(dict.fromkeys(items))


@dataclass
class Row:
    """One summary row: the entries of one attack line under one defense setting, the
    attack's own cells and its control's (``control`` other than ``none``)."""

    defense: str
    line: tuple
    entries: list

    @property
    def done(self) -> list:
        return [e for e in self.entries if e.status == "done" and e.control == "none"]

    @property
    def control_done(self) -> list:
        return [e for e in self.entries if e.status == "done" and e.control != "none"]

    @property
    def priors(self) -> list[str]:
        """The generators the row's done latent-attack cells searched (``ggl.study.report.
        records.prior_label``), in first-seen order; empty for pixel attacks."""
        return ordered(e.search["prior"] for e in self.done
                       if e.search is not None and e.search.get("prior"))

    @property
    def failed(self) -> int:
        return sum(e.status != "done" for e in self.entries)

    def leaks(self, key: str) -> list[float | None]:
        """Attack - control of ``key``, per private image and seed that has both."""
        controls = {e.replicate: e.values.get(key) for e in self.control_done}
        return [None if e.values.get(key) is None or controls[e.replicate] is None
                else e.values[key] - controls[e.replicate]
                for e in self.done if e.replicate in controls]


def summary_rows(entries: Sequence[Entry]) -> list[Row]:
    """Rows in first-seen order of defense, then of attack line (controls in their
    attack's row)."""
    rows: dict[tuple, Row] = {}
    defenses = ordered(e.defense for e in entries)
    for defense in defenses:
        for entry in entries:
            if entry.defense == defense:
                key = (defense, entry.row_line)
                rows.setdefault(key, Row(defense, entry.row_line, [])).entries.append(entry)
    return list(rows.values())


def format_stat(values: Sequence[float | None], digits: int, scale: float = 1.0) -> str:
    """``mean ± std`` (sample std, n - 1) of the values that are not None; the mean alone
    for one value; ``n/a`` for none; ``(k/n)`` appended when only k of n have a value."""
    present = [v * scale for v in values if v is not None]
    if not present:
        return "n/a"
    mean = statistics.fmean(present)
    text = f"{mean:.{digits}f}"
    if len(present) > 1:
        text += f" ± {statistics.stdev(present):.{digits}f}"
    if len(present) < len(values):
        text += f" ({len(present)}/{len(values)})"
    return text


def table_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]]:
    """The summary table as header + rows of strings (shared by Markdown and HTML)."""
    settings = any(r.line[2] for r in rows)
    controls = any(r.control_done for r in rows)
    priors = any(r.priors for r in rows)
    header = ["defense", "attack"] + (["prior"] if priors else []) + ["adaptive"] + \
             (["setting"] if settings else []) + ["cells", "failed"] + [c.header for c in COLUMNS]
    if controls:
        header += [c.header for c in CONTROL_COLUMNS + LEAK_COLUMNS]
    body = []
    for row in rows:
        attack, adaptive, setting = row.line
        cells = [row.defense, attack]
        if priors:
            cells.append(", ".join(row.priors) or "-")
        cells.append("yes" if adaptive else "no")
        if settings:
            cells.append(setting_text(setting) or "-")
        cells += [str(len(row.entries)), str(row.failed)]
        cells += [format_stat([e.values.get(c.key) for e in row.done], c.digits, c.scale)
                  for c in COLUMNS]
        if controls:
            cells += [format_stat([e.values.get(c.key) for e in row.control_done], c.digits,
                                  c.scale) for c in CONTROL_COLUMNS]
            cells += [format_stat(row.leaks(c.key), c.digits, c.scale) for c in LEAK_COLUMNS]
        body.append(cells)
    return header, body


def _stats(values: Sequence[float | None], scale: float = 1.0) -> dict:
    present = [v * scale for v in values if v is not None]
    return {"mean": statistics.fmean(present) if present else None,
            "std": statistics.stdev(present) if len(present) > 1 else None,
            "n": len(present), "of": len(values)}


def row_stats(rows: Sequence[Row]) -> list[dict]:
    """The summary table as numbers for scripts (``--json``): per row its defense, attack,
    priors, adaptive, setting, cell counts and, per column key, ``{mean, std, n, of}`` (n of
    the ``of`` done cells have a value; percentages as in the table) for the attack, its
    control and the leak over the control."""
    result = []
    for row in rows:
        attack, adaptive, setting = row.line
        stats = {"defense": row.defense, "attack": attack, "priors": row.priors,
                 "adaptive": bool(adaptive), "setting": {k: v for k, v in setting},
                 "cells": len(row.entries), "failed": row.failed,
                 "metrics": {c.key: _stats([e.values.get(c.key) for e in row.done], c.scale)
                             for c in COLUMNS}}
        if row.control_done:
            stats["control"] = {c.key: _stats([e.values.get(c.key) for e in row.control_done],
                                              c.scale) for c in CONTROL_COLUMNS}
            stats["leak"] = {c.key: _stats(row.leaks(c.key), c.scale) for c in LEAK_COLUMNS}
        result.append(stats)
    return result


#: what the search-stages table's "returned" column means
STAGES_NOTE = ("The stages of each latent search as run.json records them; returned: the stage "
               "whose images the attack returned (the lowest gradient loss, or with holdout "
               "the lowest distance on the held-out gradient entries).")


def stage_cells(rows: Sequence[Row]) -> tuple[list[str], list[list[str]]] | None:
    """The search-stages table (latent attacks): per summary row, each stage's mean
    evaluations and seconds over the row's done cells, and which stage's images each cell
    returned (``STAGES_NOTE``). None when no row searched in stages."""
    body = []
    for row in rows:
        searched = [e.search for e in row.done if e.search is not None and e.search["stages"]]
        if not searched:
            continue
        totals: dict[str, list] = {}
        for search in searched:
            for record in search["stages"]:
                totals.setdefault(record["stage"], []).append(record)
        stages = "; ".join(
            f"{name} {format_stat([r['evaluations'] for r in records], 0)} ev, "
            f"{format_stat([r['seconds'] for r in records], 1)} s"
            for name, records in totals.items())
        returned = {}
        for search in searched:
            returned[search["returned"]] = returned.get(search["returned"], 0) + 1
        attack, adaptive, setting = row.line
        body.append([row.defense, attack, "yes" if adaptive else "no",
                     setting_text(setting) or "-", stages,
                     ", ".join(f"{name} {count}/{len(searched)}"
                               for name, count in returned.items())])
    if not body:
        return None
    return ["defense", "attack", "adaptive", "setting", "stages (mean evaluations, seconds)",
            "returned"], body


def md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(md_escape, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(md_escape, row)) + " |" for row in body]
    return "\n".join(lines)


def replicate_labels(entries: Sequence[Entry]) -> dict:
    seeds = {e.config.get("seed") for e in entries}
    labels = {}
    for entry in entries:
        index, seed = entry.replicate
        text = "index " + (",".join(map(str, index)) if index else "random")
        if len(seeds) > 1:
            text += f", seed {seed}"
        labels[entry.replicate] = text
    return labels

