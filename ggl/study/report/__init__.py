"""Reports (``ggl report DIR``): run records -> tables, plots and image grids -> HTML + Markdown.

What it reads (decided by what ``DIR`` holds):

* a sweep store (``DIR/index.jsonl``, written by ``ggl sweep --out DIR`` or ``ggl
  compare``): the latest record of every cell in the store, done and failed, with each done
  cell's ``runs/<cell_id>/run.json`` (loss history) and images;
* otherwise every ``run.json`` below ``DIR`` (folders written by ``ggl run --out``). Such a
  folder exists only for a finished run, so only a run whose loss is not finite can appear
  as failed; runs that raised left nothing to report.

What it writes, each file atomically (``ggl.results.atomic_write_bytes``), for a file stem
``STEM`` (default ``DIR/report``):

* ``STEM.html``: one self-contained page: inline CSS, every figure embedded as a
  ``data:image/png;base64`` URI, no script, font or link outside the page (opens offline);
* ``STEM.md``: the same tables, referencing the figures in ``STEM_files/*.png``;
* ``STEM_files/``: the figures (PNG files of an earlier report there that the new one does
  not use are removed).

Contents:

* **summary table**: one row per attack x defense x adaptive (x any other setting that
  varies within an attack's cells, e.g. ``budget`` or ``model``), pooling the cells that
  differ only in the private image (``index``) and ``seed``: the prior a latent attack
  searched (``records.prior_label``; column shown when the store has one), number of cells, failed cells,
  and mean +/- sample standard deviation (n - 1; the mean alone for a single cell) over the
  done cells of PSNR (dB), SSIM, LPIPS, judge accuracy (%), identifiability (%), label
  accuracy (%), the prior's ceiling (dB) and the search gap (latent attacks), attack wall
  time (s, the attack's own time, ``attack_wall_time_s``) and objective evaluations. Cells
  of a control (``control`` other than ``none``) sit in their attack's row: its PSNR, judge
  accuracy and identifiability, and the leaks (attack - control, paired by private image
  and seed) follow in columns of their own. A metric that is
  null in a record (LPIPS without ``--lpips-weights``) is left out of its mean; a column
  with no value at all shows ``n/a`` (never a made-up number), and one with values for
  only some cells says how many, e.g. ``0.31 ± 0.02 (3/4)``;
* **PSNR vs defense strength**: for each defense family with a numeric parameter that takes
  at least two values in the store (``noise:0.01``, ``noise:0.1``, ... or one position of a
  chain, the others fixed), mean PSNR (+/- std) against the parameter, one line per attack
  and adaptive on/off; a dotted line marks each attack's PSNR without a defense;
* **image grids**: per defense setting, one row per private image (index, seed): the
  original, then each attack's reconstruction with its PSNR;
* **loss curves**: per defense setting, one panel per attack (the attacks' losses have
  different scales), one curve per private image, from ``run.json``'s ``loss_history``;
* **failed cells**: each failed cell's setting, id, attempts and error (and traceback in the
  HTML).

Example::

    from ggl.study.report import write_report
    report = write_report("results/tiny")      # results/tiny/report.html, report.md
    print(report.table)                        # the summary table (Markdown)

The package: :mod:`~ggl.study.report.records` (the entries, read through the store),
:mod:`~ggl.study.report.tables` (rows and tables), :mod:`~ggl.study.report.figures` (the
PNGs), :mod:`~ggl.study.report.render` (the pages); this module writes them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ggl import checks
from ggl.errors import GGLError
from ggl.results import atomic_write_bytes
from ggl.study.report.figures import all_figures
from ggl.study.report.records import Entry, load_entries
from ggl.study.report.render import render_html, render_markdown
from ggl.study.report.tables import markdown_table, replicate_labels, row_stats, \
    stage_cells, summary_rows, table_cells

__all__ = ["REPORT_STEM", "FILES_SUFFIX", "Entry", "Report", "load_entries", "write_report"]

#: default file stem inside the reported folder: report.html, report.md, report_files/
REPORT_STEM = "report"
#: the figures' folder is the stem + this suffix
FILES_SUFFIX = "_files"


@dataclass
class Report:
    """A written report: where its files are and what it says."""

    root: Path
    name: str
    kind: str
    html: Path
    markdown: Path
    files: Path
    table: str
    cells: int
    done: int
    failed: int
    figures: list[str]
    skipped: list[str] = field(default_factory=list)   # malformed records left out
    rows: list[dict] = field(default_factory=list)     # the table in numbers (row_stats)

    def to_dict(self) -> dict:
        """What ``--json`` prints: paths, counts, skipped records and the rows' numbers."""
        return {"name": self.name, "kind": self.kind, "root": str(self.root),
                "html": str(self.html), "markdown": str(self.markdown),
                "cells": self.cells, "done": self.done, "failed": self.failed,
                "skipped_records": self.skipped, "rows": self.rows}

    def line(self) -> str:
        skipped = f", {len(self.skipped)} malformed records skipped" if self.skipped else ""
        return (f"report of {self.name} ({self.kind}): {self.cells} cells, {self.done} done, "
                f"{self.failed} failed{skipped} -> {self.html}, {self.markdown} (+ "
                f"{len(self.figures)} figures in {self.files})")


def _stem(root: Path, out: str | Path | None) -> Path:
    if out is None:
        return root / REPORT_STEM
    stem = Path(out).expanduser()
    if stem.suffix.lower() in (".html", ".md"):
        stem = stem.with_suffix("")
    if stem.is_dir():
        raise GGLError(f"--out {str(out)!r} is a folder; give a file stem such as "
                       f"{str(stem / REPORT_STEM)!r} (writes .html, .md and _files/)")
    return stem.resolve()


def write_report(root: str | Path, out: str | Path | None = None) -> Report:
    """Write the report of a sweep store or of a folder of ``ggl run`` outputs.

    Args:
        root: the folder (see the module docstring for what it may hold).
        out: file stem; writes ``OUT.html``, ``OUT.md`` and ``OUT_files/`` (default
            ``root/report``).

    Returns:
        A :class:`Report` with the paths, the summary table (Markdown) and the counts.

    Raises:
        GGLError: ``root`` is not a folder or holds no record.
    """
    entries, kind, name, skipped = load_entries(root)
    root = Path(root).resolve()
    stem = _stem(root, out)
    checks.writable_folder(stem.parent, "--out")
    files = stem.parent / (stem.name + FILES_SUFFIX)
    rows = summary_rows(entries)
    header, body = table_cells(rows)
    table = markdown_table(header, body)
    figures = all_figures(entries)
    failed = [e for e in entries if e.status != "done"]
    labels = replicate_labels(entries)
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")

    html_path, md_path = stem.parent / (stem.name + ".html"), stem.parent / (stem.name + ".md")
    for figure in figures:
        atomic_write_bytes(files / figure.name, figure.png)
    stages = stage_cells(rows)
    markdown = render_markdown(name, kind, root, entries, table, stages, figures,
                               files.name, failed, labels, stamp)
    atomic_write_bytes(md_path, markdown.encode("utf-8"))
    page = render_html(name, kind, root, entries, header, body, stages, figures, failed,
                       labels, stamp)
    atomic_write_bytes(html_path, page.encode("utf-8"))
    if files.is_dir():                      # figures of an earlier report, no longer used
        used = {f.name for f in figures}
        for stale in files.glob("*.png"):
            if stale.name not in used:
                stale.unlink(missing_ok=True)
    return Report(root, name, kind, html_path, md_path, files,
                  table, len(entries), len(entries) - len(failed), len(failed),
                  [f.name for f in figures], skipped, row_stats(rows))
