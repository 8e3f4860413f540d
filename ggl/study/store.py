"""The result store of a sweep: ``index.jsonl``, one record per finished attempt, and the
run folders beside it.

The store, in ``--out DIR``::

    DIR/index.jsonl          one JSON line per finished attempt: the store (below)
    DIR/runs/<cell_id>/      run.json, original.png, reconstruction.png, progress.gif
                             (written atomically by ggl.api.run, as `ggl run` writes them)
    DIR/sweep.json           the last grid run into DIR: name, source file, YAML, cell ids
    DIR/.sweep.lock          held while a sweep writes (a second sweep on DIR is refused)

Each line of ``index.jsonl`` is one cell's record: ``cell_id``, ``status`` (``done`` or
``failed``), ``attempt``, ``cell`` (its grid values), ``config`` (the full RunConfig),
``metrics`` (``psnr``, ``ssim``, ``lpips`` or null, ``label_accuracy``, ``mse``,
``feature_mse``, ``judge_accuracy`` (null without a judge), ``identifiability`` and its
``identifiability_space``, ``ceiling_psnr`` and ``search_gap`` (null for pixel attacks)),
``loss``, ``evaluations``, ``iterations``, ``wall_time_s``,
``attack_wall_time_s``, ``error`` and ``traceback`` (null when done), ``run_dir``,
``finished_at``, ``host``, and ``defenses``, the canonical defense chain as run.json
records it (a list of ``{spec, name, param, options}``; absent where run.json has none,
e.g. for a failed cell). Non-finite numbers are written as null (strict JSON). The latest
line of a cell wins. A cell whose run raises, or whose loss is NaN or infinite, is recorded
as ``failed`` with its error, and the sweep goes on.

Why JSON lines and not SQLite: only the parent process writes (workers return records), so
no concurrent-writer locking is needed; an append of one line is the unit of atomicity and
a line torn by a kill is dropped when the store is next opened (that cell simply runs
again); the file is readable with ``grep``/``jq``/``pandas.read_json(lines=True)``, diffs
and commits like the other tables under ``experiments/results/``, and needs no schema
migration. The per-run files sit beside it, so nothing is lost if the index is removed.

Re-running the same command resumes: cells whose latest record is ``done`` are skipped,
``failed`` ones are retried, and a cell killed mid-run has no record and runs again. Kill a
sweep at any moment and run it again: nothing finished is lost and nothing runs twice.

:func:`new_record` and :func:`add_run` build a record (the executors fill it in as a cell
runs); :class:`ResultStore` appends records and reads the latest one of every cell (what
the sweep resumes from and the report reads).
"""
from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path
from typing import Any

from ggl.errors import GGLError
from ggl.results import remove_stale_temporaries

#: the store's files inside the output folder
INDEX_FILE = "index.jsonl"
RUNS_DIR = "runs"
SWEEP_FILE = "sweep.json"
LOCK_FILE = ".sweep.lock"
#: metrics copied from run.json into the index
INDEX_METRICS = ("psnr", "ssim", "lpips", "label_accuracy", "mse", "feature_mse",
                 "judge_accuracy", "judge_private_accuracy", "identifiability",
                 "identifiability_space", "ceiling_psnr", "search_gap")


def new_record(cell_id: str, cell: dict, config: dict) -> dict:
    """The record of a cell that has not finished: ``failed``, every result null."""
    return {"cell_id": cell_id, "status": "failed", "cell": cell, "config": config,
            "metrics": None, "loss": None, "evaluations": None, "iterations": None,
            "wall_time_s": None, "attack_wall_time_s": None, "error": None,
            "traceback": None, "run_dir": f"{RUNS_DIR}/{cell_id}",
            "host": socket.gethostname()}


def add_run(record: dict, run: dict) -> None:
    """Copy what the index keeps of a run's ``run.json`` record into ``record``: the
    metrics (``INDEX_METRICS``), loss, evaluations, iterations, the attack's wall time and,
    where the run has it, its canonical defense chain (``defenses``)."""
    record.update(
        metrics={k: run["metrics"].get(k) for k in INDEX_METRICS},
        loss=run["loss"], evaluations=run["evaluations"], iterations=run["iterations"],
        attack_wall_time_s=run["attack_wall_time_s"])
    if "defenses" in run:
        record["defenses"] = run["defenses"]


def _finite(value: Any) -> Any:
    """Non-finite floats -> None, recursively (the index is strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


class ResultStore:
    """The sweep's output folder: ``index.jsonl`` (one record per line, the latest line of a
    cell wins) and ``runs/<cell_id>/``. Only one process writes it, under a lock."""

    def __init__(self, root: str | Path):
        self.root = Path(root).resolve()
        self.index = self.root / INDEX_FILE
        self._lock = None

    def run_dir(self, identifier: str) -> Path:
        return self.root / RUNS_DIR / identifier

    def lock(self) -> None:
        """Take the folder's lock, or raise GGLError if another sweep holds it."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle = open(self.root / LOCK_FILE, "a+")
        try:
            import fcntl
        except ImportError:              # no advisory locks on this platform
            self._lock = handle
            return
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise GGLError(f"another ggl sweep is writing to {self.root} (it holds "
                           f"{self.root / LOCK_FILE}); wait for it to finish or use another "
                           f"--out") from None
        self._lock = handle

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()          # closing the file releases the lock
            self._lock = None

    def repair(self) -> None:
        """Drop a last line torn by a kill mid-append (its cell will simply run again) and
        the temporary files a kill mid-write left in the store's folder."""
        remove_stale_temporaries(self.root)
        if not self.index.exists():
            return
        data = self.index.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.index, "r+b") as handle:
                handle.truncate(data.rfind(b"\n") + 1)

    def records(self) -> dict[str, dict]:
        """The latest record of every cell in the store, by cell id (attempts counted)."""
        return {record["cell_id"]: record for _, record in self.numbered_records()}

    def numbered_records(self) -> list[tuple[int, dict]]:
        """``(line number, record)`` of every record in ``index.jsonl``, in order; torn
        lines and lines that are not a record with a text ``cell_id`` are left out."""
        found: list[tuple[int, dict]] = []
        if not self.index.exists():
            return found
        with open(self.index, encoding="utf-8", errors="replace") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue            # a torn line: that cell has no record
                if isinstance(record, dict) and isinstance(record.get("cell_id"), str):
                    found.append((number, record))
        return found

    def append(self, record: dict) -> dict:
        """Append one record as one line (one write, flushed and fsynced); returns the
        record as stored (what :meth:`records` will read back)."""
        self.root.mkdir(parents=True, exist_ok=True)
        line = json.dumps(_finite(record), allow_nan=False, default=str)
        with open(self.index, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        return json.loads(line)

