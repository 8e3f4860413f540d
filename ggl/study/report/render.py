"""The report's pages: the Markdown (figures referenced as files) and the self-contained
HTML (inline CSS, figures as ``data:`` URIs, no script), with the notes that explain the
tables and the list of failed cells.
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import Sequence

from ggl.study.report.figures import Figure
from ggl.study.report.records import Entry
from ggl.study.report.tables import (COLUMNS, STAGES_NOTE, format_stat, line_label,
                                     markdown_table, md_escape)

SECTIONS = (("strength", "PSNR vs defense strength"), ("grids", "Image grids"),
            ("losses", "Loss curves"))


def _failed_label(entry: Entry, labels: dict) -> str:
    return f"{line_label(entry.line)}, defense {entry.defense}, {labels[entry.replicate]}"


def _notes(entries: Sequence[Entry]) -> list[str]:
    notes = ["Each row pools the cells that differ only in the private image (index) and "
             "seed: mean ± sample standard deviation (n - 1) over its done cells; a single "
             "cell shows its value; (k/n): only k of the n done cells have the value.",
             "attack time: the attack's own wall time (attack_wall_time_s); evaluations: "
             "objective evaluations (one candidate = one evaluation).",
             "judge: share of reconstructions an independent classifier (trained on the "
             "public split only) assigns to the true class; identif.: share whose nearest "
             "private image (judge features; pixels without a judge) is the true one; "
             "ceiling: PSNR of the true image projected into the prior; search gap: the "
             "attack's objective at its latent minus at the projected one (> 0: the search "
             "stopped short; < 0: the objective prefers another image). Ceiling and gap: "
             "latent attacks only."]
    judges = sorted({e.values["judge_private_accuracy"] for e in entries
                     if e.values.get("judge_private_accuracy") is not None})
    if judges:
        notes.append("the judge's own accuracy on the private split: "
                     + ", ".join(f"{value:.1%}" for value in judges) + ".")
    if any(e.control != "none" for e in entries):
        notes.append("control: the same attack given noise at each layer's norm in place of "
                     "the update (same labels, same defense): what the prior and the labels "
                     "alone give; leak = attack - control, paired by private image and seed.")
    if all(e.values.get("lpips") is None for e in entries if e.status == "done"):
        notes.append("LPIPS: n/a, no record has it (it needs `--lpips-weights`, torchvision's "
                     "AlexNet file; it is never computed with random weights).")
    return notes


def render_markdown(name: str, kind: str, root: Path, entries: Sequence[Entry], table: str,
                    stages, figures: Sequence[Figure], files_link: str,
                    failed: Sequence[Entry], labels: dict, stamp: str) -> str:
    """The Markdown report; figures referenced as ``files_link/NAME``; ``stages``:
    :func:`stage_cells` (or None)."""
    done = sum(e.status == "done" for e in entries)
    out = [f"# ggl report: {name}", "",
           f"{kind} `{root}`: **{len(entries)} cells, {done} done, {len(failed)} failed** "
           f"(generated {stamp}).", "", "## Summary", "", table, ""]
    out += [f"* {note}" for note in _notes(entries)] + [""]
    if stages is not None:
        out += ["## Search stages", "", markdown_table(*stages), "", f"* {STAGES_NOTE}", ""]
    for section, title in SECTIONS:
        members = [f for f in figures if f.section == section]
        if not members:
            continue
        out += [f"## {title}", ""]
        for figure in members:
            out += [f"### {figure.title}", "", f"![{figure.title}]({files_link}/{figure.name})",
                    "", f"*{figure.caption}*", ""]
    out += ["## Failed cells", ""]
    if failed:
        for entry in failed:
            error = md_escape(entry.error or "no error recorded").replace("`", "'")
            out.append(f"* `{entry.cell_id}` {md_escape(_failed_label(entry, labels))} "
                       f"(attempt {entry.attempt}): {error}")
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1800px; padding: 0 1em; color: #222; }
p, ul, h1, h2, h3, figcaption, .note { max-width: 1100px; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.8em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.4em; text-align: right; }
th { background: #f0f0f0; }
td.text, th.text { text-align: left; }
tr.failed td { color: #a00; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.85em; color: #555; }
pre { background: #f7f7f7; padding: 0.5em; overflow-x: auto; font-size: 0.8em; }
.note { font-size: 0.85em; color: #444; }
"""


def _html_table(header: Sequence[str], body: Sequence[Sequence[str]], text_columns: int,
                row_classes: Sequence[str] | None = None) -> str:
    def cell(tag: str, i: int, value: str) -> str:
        attribute = ' class="text"' if i < text_columns else ""
        return f"<{tag}{attribute}>{html.escape(str(value))}</{tag}>"

    lines = ['<div class="scroll"><table>', "<thead><tr>" + "".join(cell("th", i, h) for i, h in
                                                 enumerate(header)) + "</tr></thead>",
             "<tbody>"]
    for r, row in enumerate(body):
        css = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        lines.append(f"<tr{css}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) +
                     "</tr>")
    lines += ["</tbody>", "</table></div>"]
    return "\n".join(lines)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cells_table(entries: Sequence[Entry], labels: dict) -> str:
    header = ["cell", "attack", "defense", "private", "status"] + [c.header for c in COLUMNS]
    body, classes = [], []
    for entry in entries:
        row = [entry.cell_id, line_label(entry.line), entry.defense, labels[entry.replicate],
               entry.status]
        row += [format_stat([entry.values.get(c.key)], c.digits, c.scale)
                if entry.status == "done" else "" for c in COLUMNS]
        body.append(row)
        classes.append("" if entry.status == "done" else "failed")
    return _html_table(header, body, 5, classes)


def render_html(name: str, kind: str, root: Path, entries: Sequence[Entry],
                header: Sequence[str], body: Sequence[Sequence[str]], stages,
                figures: Sequence[Figure], failed: Sequence[Entry], labels: dict,
                stamp: str) -> str:
    """The self-contained HTML page (inline CSS, figures as data URIs, no script);
    ``stages``: :func:`stage_cells` (or None)."""
    escape = html.escape
    done = sum(e.status == "done" for e in entries)
    text_columns = 4 if "setting" in header else 3
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>ggl report: {escape(name)}</title>", f"<style>{CSS}</style>", "</head>",
             "<body>", f"<h1>ggl report: {escape(name)}</h1>",
             f"<p>{escape(kind)} <code>{escape(str(root))}</code>: <strong>{len(entries)} "
             f"cells, {done} done, {len(failed)} failed</strong> (generated "
             f"{escape(stamp)}).</p>",
             '<h2 id="summary">Summary</h2>',
             _html_table(header, body, text_columns,
                         ["failed" if row[header.index("failed")] != "0" else ""
                          for row in body]),
             "<ul>" + "".join(f'<li class="note">{escape(n.replace("`", ""))}</li>'
                            for n in _notes(entries)) +
             "</ul>"]
    if stages is not None:
        parts += ['<h2 id="stages">Search stages</h2>', _html_table(*stages, 6),
                  f'<p class="note">{html.escape(STAGES_NOTE)}</p>']
    for section, title in SECTIONS:
        members = [f for f in figures if f.section == section]
        if not members:
            continue
        parts.append(f'<h2 id="{section}">{escape(title)}</h2>')
        for figure in members:
            parts += ["<figure>", f"<h3>{escape(figure.title)}</h3>",
                      f'<img src="{_data_uri(figure.png)}" alt="{escape(figure.title)}">',
                      f"<figcaption>{escape(figure.caption)}</figcaption>", "</figure>"]
    parts.append('<h2 id="failed">Failed cells</h2>')
    if failed:
        parts.append("<ul>")
        for entry in failed:
            trace = (f"<details><summary>traceback</summary><pre>{escape(entry.traceback)}"
                     f"</pre></details>") if entry.traceback else ""
            parts.append(f"<li><code>{escape(entry.cell_id)}</code> "
                         f"{escape(_failed_label(entry, labels))} (attempt {entry.attempt}): "
                         f"<strong>{escape(entry.error or 'no error recorded')}</strong>"
                         f"{trace}</li>")
        parts.append("</ul>")
    else:
        parts.append("<p>None.</p>")
    parts += ['<h2 id="cells">All cells</h2>', "<details><summary>one row per cell "
              f"({len(entries)})</summary>", _cells_table(entries, labels), "</details>",
              "</body>", "</html>"]
    return "\n".join(parts) + "\n"

