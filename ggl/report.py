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
  differ only in the private image (``index``) and ``seed``: number of cells, failed cells,
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

    from ggl.report import write_report
    report = write_report("results/tiny")      # results/tiny/report.html, report.md
    print(report.table)                        # the summary table (Markdown)
"""
from __future__ import annotations

import base64
import html
import io
import json
import math
import re
import statistics
import textwrap
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from ggl.errors import GGLError
from ggl.results import atomic_write_bytes

#: default file stem inside the reported folder: report.html, report.md, report_files/
REPORT_STEM = "report"
#: the figures' folder is the stem + this suffix
FILES_SUFFIX = "_files"
#: config fields that never split a summary row: the replicates (index, seed), the output
#: folder, and the fields shown in their own columns (d_param is part of the defense)
POOLED_FIELDS = ("out", "index", "seed", "attack", "defense", "d_param", "adaptive",
                 "control")
#: at most this many private images (rows) in one image grid
MAX_GRID_ROWS = 16


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


# --------------------------------------------------------------------------------------
# records
# --------------------------------------------------------------------------------------
@dataclass
class Entry:
    """One cell (sweep store) or one run folder, as the report sees it.

    ``values`` holds the numbers of the summary table (``COLUMNS`` keys; None when the
    record has none); ``history`` the ``(iterations, losses)`` of ``run.json``.
    """

    cell_id: str
    status: str
    config: dict
    values: dict
    loss: float | None = None
    error: str | None = None
    traceback: str | None = None
    attempt: int = 1
    run_dir: Path | None = None
    private_indices: list | None = None
    history: tuple[list, list] | None = None
    likelihood: str | None = None     # the noise likelihood an adaptive attack matched with
    search: dict | None = None        # a latent attack's resolved search (see _search)
    # filled by :func:`_describe`
    defense: str = "none"
    chain: list = field(default_factory=list)
    setting: tuple = ()

    @property
    def attack(self) -> str:
        return self.config.get("attack", "?")

    @property
    def adaptive(self) -> bool:
        return bool(self.config.get("adaptive")) and self.defense != "none"

    @property
    def control(self) -> str:
        """``none`` for the attack on the real update, else the control's name."""
        return self.config.get("control") or "none"

    @property
    def line(self) -> tuple:
        """What one plotted line / grid column stands for (a control is a line of its own,
        its setting ending in ``("control", name)``)."""
        return (self.attack, self.adaptive, self.setting)

    @property
    def row_line(self) -> tuple:
        """What one table row (per defense) stands for: the line without the control."""
        return (self.attack, self.adaptive,
                tuple(item for item in self.setting if item[0] != "control"))

    @property
    def replicate(self) -> tuple:
        """The private images and seed: what a summary row averages over."""
        index = self.config.get("index") or self.private_indices or []
        return (tuple(index), self.config.get("seed"))

    def image(self, name: str) -> Path | None:
        if self.run_dir is None:
            return None
        path = self.run_dir / name
        return path if path.is_file() else None


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _finite_or_none(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _history(run: dict | None) -> tuple[list, list] | None:
    history = (run or {}).get("loss_history") or {}
    iterations, losses = history.get("iteration") or [], history.get("loss") or []
    pairs = [(i, v) for i, v in zip(iterations, losses) if _finite_or_none(v) is not None]
    if not pairs:
        return None
    return [i for i, _ in pairs], [float(v) for _, v in pairs]


def _values(metrics: dict | None, source: dict) -> dict:
    metrics = metrics or {}
    values = {key: _finite_or_none(metrics.get(key))
              for key in ("psnr", "ssim", "lpips", "label_accuracy", "judge_accuracy",
                          "judge_private_accuracy", "identifiability", "ceiling_psnr",
                          "search_gap")}
    values["attack_wall_time_s"] = _finite_or_none(source.get("attack_wall_time_s"))
    values["evaluations"] = _finite_or_none(source.get("evaluations"))
    return values


def _likelihood(run: dict | None) -> str | None:
    """``gaussian(0.1)`` when the run's adaptive attack matched with a noise likelihood
    (it then replaced the configured distance), else None."""
    model = ((run or {}).get("info") or {}).get("defense_model") or {}
    return model.get("likelihood")


def _search(run: dict | None) -> dict | None:
    """A latent attack's resolved search from run.json's ``info``: ``{"plan": "sample:1000,
    CMA:4000", "starts": 4, "prior": "mnist-wgan-gp", "returned": "latent search",
    "stages": [{"stage", "evaluations", "seconds"}, ...]}``; None for other attacks or
    records that do not say (malformed fields are left out, never trusted)."""
    info = (run or {}).get("info")
    if not isinstance(info, dict) or not isinstance(info.get("stages"), list):
        return None
    stages = [str(s) for s in info["stages"]]
    records = info.get("stage_records")
    records = [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []
    generator = info.get("generator")
    starts = info.get("starts")
    return {"plan": ",".join(stages),
            "starts": starts if isinstance(starts, int) and not isinstance(starts, bool) else None,
            "prior": Path(str(generator).partition(":")[2] or str(generator)).name
            if generator else None,
            "returned": str(info.get("returned_stage") or "latent search"),
            "stages": [{"stage": str(r.get("stage")),
                        "evaluations": _finite_or_none(r.get("evaluations")),
                        "seconds": _finite_or_none(r.get("seconds"))} for r in records]}


def _store_entries(root: Path) -> list[Entry]:
    from ggl.sweep import ResultStore

    entries = []
    for record in ResultStore(root).records().values():
        run_dir = root / record["run_dir"] if record.get("run_dir") else None
        run = _read_json(run_dir / "run.json") if run_dir is not None else None
        done = record.get("status") == "done"
        entries.append(Entry(
            cell_id=record["cell_id"], status="done" if done else "failed",
            config=record.get("config") or {}, values=_values(record.get("metrics"), record),
            loss=_finite_or_none(record.get("loss")), error=record.get("error"),
            traceback=record.get("traceback"), attempt=record.get("attempt") or 1,
            run_dir=run_dir if done else None,
            private_indices=(run or {}).get("private_indices"),
            history=_history(run) if done else None, likelihood=_likelihood(run),
            search=_search(run) if done else None))
    return entries


def _run_entries(root: Path) -> list[Entry]:
    entries = []
    for path in sorted(root.rglob("run.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        run = _read_json(path)
        if run is None or not isinstance(run.get("config"), dict):
            continue
        loss = _finite_or_none(run.get("loss"))
        relative = path.parent.relative_to(root).as_posix()
        entries.append(Entry(
            cell_id=relative if relative != "." else path.parent.name,
            status="done" if loss is not None else "failed", config=run["config"],
            values=_values(run.get("metrics"), run), loss=loss,
            error=None if loss is not None else
            f"the gradient-matching loss is {run.get('loss')} (not finite)",
            run_dir=path.parent, private_indices=run.get("private_indices"),
            history=_history(run), likelihood=_likelihood(run), search=_search(run)))
    return entries


def load_entries(root: str | Path) -> tuple[list[Entry], str, str]:
    """The entries of a sweep store or a folder of ``ggl run`` outputs.

    Returns:
        ``(entries, kind, name)``: kind is ``"sweep store"`` or ``"run folders"``; name the
        sweep's name (``sweep.json``) or the folder's.

    Raises:
        GGLError: ``root`` is not a folder, or holds no record.
    """
    from ggl.sweep import INDEX_FILE, SWEEP_FILE

    root = Path(root)
    if not root.is_dir():
        raise GGLError(f"{str(root)!r} is not a folder; give a sweep store (`ggl sweep --out "
                       f"DIR`, `ggl compare --out DIR`) or a folder of `ggl run` outputs")
    root = root.resolve()
    if (root / INDEX_FILE).is_file():
        entries, kind = _store_entries(root), "sweep store"
        name = (_read_json(root / SWEEP_FILE) or {}).get("name") or root.name
    else:
        entries, kind, name = _run_entries(root), "run folders", root.name
    if not entries:
        raise GGLError(f"no run records in {root}: expected a sweep store ({INDEX_FILE} with "
                       f"at least one record, written by `ggl sweep --out DIR` or `ggl "
                       f"compare --out DIR`) or folders holding run.json (written by `ggl "
                       f"run --out DIR`)")
    _describe(entries)
    return entries, kind, str(name)


# --------------------------------------------------------------------------------------
# grouping
# --------------------------------------------------------------------------------------
def _chain(config: dict) -> tuple[str, list]:
    """``(label, [(name, param, options), ...])`` of a config's defense chain, canonical
    (aliases resolved, defaults filled in); the raw specs when they no longer parse."""
    from ggl.defenses import parse_defenses

    specs = tuple(config.get("defense") or ())
    if not specs:
        return "none", []
    try:
        defenses = parse_defenses(specs, config.get("d_param"))
    except (GGLError, TypeError, ValueError):
        return "+".join(specs), []
    chain = []
    for defense in defenses:
        options = tuple(sorted((key, str(getattr(defense, key))) for key in defense.options))
        chain.append((defense.name, defense.param, options))
    return "+".join(repr(d) for d in defenses), chain


def _flat_settings(config: dict) -> dict:
    """Config fields that may split a row, ``extra`` flattened to ``extra.KEY``."""
    flat = {}
    for key, value in config.items():
        if key in POOLED_FIELDS:
            continue
        if key == "extra" and isinstance(value, dict):
            for sub, sub_value in value.items():
                flat[f"extra.{sub}"] = json.dumps(sub_value, sort_keys=True)
        else:
            flat[key] = json.dumps(value, sort_keys=True)
    return flat


#: config fields a latent attack's resolved search (``search=...``) states in full
SEARCH_FIELDS = ("budget", "extra.budget", "extra.ng_method", "extra.stages", "extra.starts")


def _search_label(search: dict) -> str:
    """``sample:1000,CMA:4000 x4``: the resolved plan and its starts (when more than one)."""
    starts = search.get("starts")
    return search["plan"] + (f" x{starts}" if starts and starts > 1 else "")


def _describe(entries: Sequence[Entry]) -> None:
    """Fill each entry's defense label, chain and ``setting``: the fields that take more
    than one value among the cells of its attack (``budget=100``, ``model=convnet``; an
    unset one is None, see :func:`setting_text`). A latent attack's search settings are
    shown as the plan it resolved them to (``search=sample:1000,CMA:4000 x4``), and, where no generator
    was named, its prior by name when the cells of the attack drew from more than one
    (``--generator default`` takes the conditional prior where one is shipped)."""
    flats = [_flat_settings(e.config) for e in entries]
    for entry, flat in zip(entries, flats):
        if entry.search is not None:
            for key in SEARCH_FIELDS:
                flat.pop(key, None)
            flat["search"] = json.dumps(_search_label(entry.search))
            if entry.search.get("prior") and "extra.generator" not in flat:
                flat["prior"] = json.dumps(entry.search["prior"])   # what `default` meant
    varying: set[str] = set()
    by_attack: dict[str, dict[str, set]] = {}
    keys = set().union(*flats)
    for entry, flat in zip(entries, flats):
        seen = by_attack.setdefault(entry.attack, {})
        for key in keys:
            seen.setdefault(key, set()).add(flat.get(key))
    for seen in by_attack.values():
        varying.update(key for key, values in seen.items() if len(values) > 1)
    for entry, flat in zip(entries, flats):
        entry.defense, entry.chain = _chain(entry.config)
        setting = []
        for key in sorted(varying):
            if len(by_attack[entry.attack].get(key, ())) > 1:
                value = flat.get(key)
                shown = json.loads(value) if value is not None else None
                if key == "distance" and entry.likelihood:
                    shown = f"{entry.likelihood} likelihood"   # it replaced the distance
                setting.append((key.removeprefix("extra."), shown))
        if entry.control != "none":
            setting.append(("control", entry.control))
        entry.setting = tuple(setting)


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


def _ordered(items: Iterable) -> list:
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
    defenses = _ordered(e.defense for e in entries)
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
    header = ["defense", "attack", "adaptive"] + (["setting"] if settings else []) + \
             ["cells", "failed"] + [c.header for c in COLUMNS]
    if controls:
        header += [c.header for c in CONTROL_COLUMNS + LEAK_COLUMNS]
    body = []
    for row in rows:
        attack, adaptive, setting = row.line
        cells = [row.defense, attack, "yes" if adaptive else "no"]
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


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(map(_md_escape, header)) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(map(_md_escape, row)) + " |" for row in body]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------
# figures (matplotlib, Agg canvas; no pyplot state)
# --------------------------------------------------------------------------------------
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
    keys = _ordered((attack, setting) for attack, _, setting in lines)
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


def _replicate_labels(entries: Sequence[Entry]) -> dict:
    seeds = {e.config.get("seed") for e in entries}
    labels = {}
    for entry in entries:
        index, seed = entry.replicate
        text = "index " + (",".join(map(str, index)) if index else "random")
        if len(seeds) > 1:
            text += f", seed {seed}"
        labels[entry.replicate] = text
    return labels


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
    replicates = _ordered(e.replicate for e in entries)[:MAX_GRID_ROWS]
    lines = _ordered(e.line for e in entries)
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
    total = len(_ordered(e.replicate for e in entries))
    note = f" (first {shown} of {total} private images)" if shown < total else ""
    return Figure(f"grid-{_slug(defense)}.png", f"Reconstructions, defense {defense}",
                  _png(figure), f"rows: private images{note}; columns: the original, then "
                                f"each attack's reconstruction with its PSNR and judge accuracy", "grids")


def loss_figure(defense: str, entries: Sequence[Entry], labels: dict) -> Figure | None:
    """The loss histories under one defense setting: one panel per attack line, one curve
    per private image (log scale when every loss is positive)."""
    lines = [line for line in _ordered(e.line for e in entries)
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
    labels = _replicate_labels(entries)
    for defense in _ordered(e.defense for e in entries):
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


# --------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------
SECTIONS = (("strength", "PSNR vs defense strength"), ("grids", "Image grids"),
            ("losses", "Loss curves"))


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

    def line(self) -> str:
        return (f"report of {self.name} ({self.kind}): {self.cells} cells, {self.done} done, "
                f"{self.failed} failed -> {self.html}, {self.markdown} (+ {len(self.figures)} "
                f"figures in {self.files})")


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
            error = _md_escape(entry.error or "no error recorded").replace("`", "'")
            out.append(f"* `{entry.cell_id}` {_md_escape(_failed_label(entry, labels))} "
                       f"(attempt {entry.attempt}): {error}")
    else:
        out.append("None.")
    return "\n".join(out) + "\n"


CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
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

    lines = ["<table>", "<thead><tr>" + "".join(cell("th", i, h) for i, h in
                                                 enumerate(header)) + "</tr></thead>",
             "<tbody>"]
    for r, row in enumerate(body):
        css = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        lines.append(f"<tr{css}>" + "".join(cell("td", i, v) for i, v in enumerate(row)) +
                     "</tr>")
    lines += ["</tbody>", "</table>"]
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
    entries, kind, name = load_entries(root)
    root = Path(root).resolve()
    stem = _stem(root, out)
    files = stem.parent / (stem.name + FILES_SUFFIX)
    rows = summary_rows(entries)
    header, body = table_cells(rows)
    table = markdown_table(header, body)
    figures = all_figures(entries)
    failed = [e for e in entries if e.status != "done"]
    labels = _replicate_labels(entries)
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
                  [f.name for f in figures])
