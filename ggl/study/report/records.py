"""The report's entries: records read from a sweep store or from ``ggl run`` folders, and
what each stands for (its defense, the settings that tell it apart from its attack's other
cells).

A sweep store's records are read through :class:`ggl.study.store.ResultStore` (the latest
record of every cell), each done cell with its ``run.json``; without an index every
``run.json`` below the folder is one entry. The defense label and chain come from the
record's canonical ``defenses`` (written by ``ggl.api`` and copied into the index), or for
older records from the raw ``--defense`` specs of the config.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ggl.errors import GGLError
from ggl.study.store import INDEX_FILE, SWEEP_FILE, ResultStore

#: config fields that never split a summary row: the replicates (index, seed), the output
#: folder, and the fields shown in their own columns (d_param is part of the defense)
POOLED_FIELDS = ("out", "index", "seed", "attack", "defense", "d_param", "adaptive",
                 "control")


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
    defenses: list | None = None      # the canonical chain the record carries (_defenses)
    # filled by :func:`describe`
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


def prior_label(generator: str) -> str:
    """The short name of a resolved ``--generator``: ``wgan-gp:.../mnist-wgan-gp`` ->
    ``mnist-wgan-gp`` (the prior's folder), ``biggan-deep-256:~/bg`` -> ``biggan-deep-256:bg``."""
    kind, _, path = generator.partition(":")
    if not path:
        return kind
    name = Path(path).name
    return name if kind == "wgan-gp" else f"{kind}:{name}"


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
            "prior": prior_label(str(generator)) if generator else None,
            "returned": str(info.get("returned_stage") or "latent search"),
            "stages": [{"stage": str(r.get("stage")),
                        "evaluations": _finite_or_none(r.get("evaluations")),
                        "seconds": _finite_or_none(r.get("seconds"))} for r in records]}


def _defenses(*sources: dict | None) -> list | None:
    """The canonical defense chain (``defenses``: ``[{spec, name, param, options}]``) of the
    first record that carries a well-formed one; None for records older than the field."""
    for source in sources:
        chain = (source or {}).get("defenses")
        if isinstance(chain, list) and all(
                isinstance(d, dict) and isinstance(d.get("spec"), str)
                and isinstance(d.get("name"), str) and "param" in d
                and isinstance(d.get("options"), dict) for d in chain):
            return chain
    return None


#: record field -> the types a report can read (``None`` allowed for each)
RECORD_TYPES = {"status": str, "config": dict, "metrics": dict, "run_dir": str,
                "loss": (int, float), "error": str, "traceback": str, "attempt": int,
                "private_indices": list}


def record_problem(record: dict) -> str | None:
    """What makes ``record`` (an index line or a run.json) unreadable for a report, or
    None: a field of the wrong type, or a config value its RunConfig field does not take."""
    from ggl.config import RunConfig
    from ggl.options import check_value, option_specs

    for key, kinds in RECORD_TYPES.items():
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, kinds)):
            return f"{key} is {type(value).__name__} {value!r:.40}"
    specs = option_specs(RunConfig)
    for key, value in (record.get("config") or {}).items():
        if key in specs:
            try:
                check_value(specs[key], value, f"config.{key}")
            except GGLError as err:
                return str(err)
    return None


def _store_entries(root: Path, skipped: list[str]) -> list[Entry]:
    entries = []
    latest = {}
    for number, record in ResultStore(root).numbered_records():
        problem = record_problem(record)
        if problem is not None:
            skipped.append(f"{INDEX_FILE}:{number}: {problem}")
            latest.pop(record["cell_id"], None)
            continue
        latest[record["cell_id"]] = record
    for record in latest.values():
        run_dir = root / record["run_dir"] if record.get("run_dir") else None
        run = _read_json(run_dir / "run.json") if run_dir is not None else None
        problem = None if run is None else record_problem(run)
        if problem is not None:
            skipped.append(f"{record['run_dir']}/run.json: {problem}")
            run = None
        done = record.get("status") == "done"
        entries.append(Entry(
            cell_id=record["cell_id"], status="done" if done else "failed",
            config=record.get("config") or {}, values=_values(record.get("metrics"), record),
            loss=_finite_or_none(record.get("loss")), error=record.get("error"),
            traceback=record.get("traceback"), attempt=record.get("attempt") or 1,
            run_dir=run_dir if done else None,
            private_indices=(run or {}).get("private_indices"),
            history=_history(run) if done else None, likelihood=_likelihood(run),
            search=_search(run) if done else None, defenses=_defenses(record, run)))
    return entries


def _run_entries(root: Path, skipped: list[str]) -> list[Entry]:
    entries = []
    for path in sorted(root.rglob("run.json")):
        if any(part.startswith(".") for part in path.relative_to(root).parts):
            continue
        run = _read_json(path)
        problem = "not a JSON object" if run is None else record_problem(run) or (
            None if isinstance(run.get("config"), dict) else "it has no config")
        if problem is not None:
            skipped.append(f"{path.relative_to(root)}: {problem}")
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
            history=_history(run), likelihood=_likelihood(run), search=_search(run),
            defenses=_defenses(run)))
    return entries


def load_entries(root: str | Path) -> tuple[list[Entry], str, str, list[str]]:
    """The entries of a sweep store or a folder of ``ggl run`` outputs.

    Returns:
        ``(entries, kind, name, skipped)``: kind is ``"sweep store"`` or ``"run folders"``;
        name the sweep's name (``sweep.json``) or the folder's; skipped the malformed
        records left out, each ``FILE[:LINE]: what is wrong``.

    Raises:
        GGLError: ``root`` is not a folder, or holds no record.
    """
    root = Path(root)
    if not root.is_dir():
        raise GGLError(f"{str(root)!r} is not a folder; give a sweep store (`ggl sweep --out "
                       f"DIR`, `ggl compare --out DIR`) or a folder of `ggl run` outputs")
    root = root.resolve()
    skipped: list[str] = []
    if (root / INDEX_FILE).is_file():
        entries, kind = _store_entries(root, skipped), "sweep store"
        sweep = _read_json(root / SWEEP_FILE)
        name = (sweep.get("name") if isinstance(sweep, dict) else None) or root.name
    else:
        entries, kind, name = _run_entries(root, skipped), "run folders", root.name
    if not entries and skipped:
        raise GGLError(f"no readable run record in {root}: {len(skipped)} malformed, e.g. "
                       f"{skipped[0]}")
    if not entries:
        raise GGLError(f"no run records in {root}: expected a sweep store ({INDEX_FILE} with "
                       f"at least one record, written by `ggl sweep --out DIR` or `ggl "
                       f"compare --out DIR`) or folders holding run.json (written by `ggl "
                       f"run --out DIR`)")
    describe(entries)
    return entries, kind, str(name), skipped


def _chain(entry: Entry) -> tuple[str, list]:
    """``(label, [(name, param, options), ...])`` of an entry's defense chain: the canonical
    chain its record carries (``defenses``: aliases resolved, every option filled in).
    Records written before runs carried it are resolved here once, as their run was (the
    raw specs joined with ``+``, and no chain, when they no longer parse)."""
    defenses = entry.defenses
    if defenses is None:
        defenses = _legacy_defenses(entry.config)
        if defenses is None:
            specs = tuple(entry.config.get("defense") or ())
            return ("+".join(map(str, specs)), []) if specs else ("none", [])
    if not defenses:
        return "none", []
    chain = [(d["name"], d["param"],
              tuple(sorted((key, str(value)) for key, value in d["options"].items())))
             for d in defenses]
    return "+".join(d["spec"] for d in defenses), chain


def _legacy_defenses(config: dict) -> list | None:
    """The canonical chain of a record older than the ``defenses`` field, from its config's
    specs (None when they do not parse)."""
    from ggl.defenses import parse_defenses

    specs = config.get("defense") or ()
    try:
        return [d.describe() for d in parse_defenses(tuple(specs), config.get("d_param"))]
    except (GGLError, TypeError, ValueError, AttributeError):
        return None


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


def describe(entries: Sequence[Entry]) -> None:
    """Fill each entry's defense label, chain and ``setting``: the fields that take more
    than one value among the cells of its attack (``budget=100``, ``model=convnet``; an
    unset one is None, see :func:`~ggl.study.report.tables.setting_text`). A latent attack's search settings are
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
        entry.defense, entry.chain = _chain(entry)
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

