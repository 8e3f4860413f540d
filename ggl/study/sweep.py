"""The sweep driver (``ggl sweep CONFIG --out DIR``): run every cell of a sweep that its
store does not hold as done yet.

The config (:mod:`ggl.study.spec`) is validated before anything runs; the store
(:mod:`ggl.study.store`) is locked, repaired (a line torn by a kill is dropped) and
read; the cells not done are handed to an executor (:mod:`ggl.study.executors`), and each
record is appended as its cell finishes. ``DIR/sweep.json`` keeps the grid last run into
``DIR``: its name, source file, YAML, axes and cell ids.

Example::

    from ggl.study.sweep import run_sweep
    summary = run_sweep("experiments/configs/tiny_sweep.yaml", "results/tiny", workers=2)
    print(summary.line())
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ggl import checks
from ggl.study.executors import make_executor, make_task
from ggl.study.grid import Sweep
from ggl.study.spec import load_sweep
from ggl.study.store import SWEEP_FILE, ResultStore


@dataclass
class SweepSummary:
    """What one ``run_sweep`` call did. ``records`` holds the latest record of every cell
    of the grid, by cell id, in the grid's order."""

    name: str
    store: Path
    total: int
    done: int
    failed: int
    skipped: int
    records: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        """What ``--json`` prints: the counts and each cell's latest record in short."""
        keep = ("cell_id", "cell", "status", "error", "attempt", "run_dir", "metrics",
                "loss", "evaluations", "wall_time_s")
        return {"name": self.name, "store": str(self.store), "total": self.total,
                "done": self.done, "failed": self.failed, "skipped": self.skipped,
                "cells": [{k: r.get(k) for k in keep} for r in self.records.values()]}

    def line(self) -> str:
        retry = "; run the same command again to retry the failed ones" if self.failed else ""
        return (f"sweep {self.name}: {self.total} cells: {self.done} done, {self.failed} "
                f"failed, {self.skipped} skipped (done before) -> {self.store}{retry}")


def run_sweep(config: str | Path | Sweep, out: str | Path, executor: str = "local",
              workers: int | None = None, address: str | None = None,
              threads: int | None = None, quiet: bool = False) -> SweepSummary:
    """Run every cell of a sweep config that is not done yet in the store ``out``.

    Args:
        config: a sweep config file (YAML, see :mod:`ggl.study.spec`) or a parsed Sweep.
        out: the store's folder; the same folder resumes.
        executor: ``local`` (processes; default) or ``ray``.
        workers: local: processes (default 1 = this process); ray: tasks in flight.
        address: ray only: the cluster's address (default: start a local Ray).
        threads: torch threads per cell (default: cores // workers, at least 1).
        quiet: no progress bar or failure lines.

    Raises:
        GGLError: a mistake in the config or the options (nothing has run), or the store
            is in use by another sweep.
    """
    from tqdm import tqdm

    sweep = config if isinstance(config, Sweep) else load_sweep(config)
    runner = make_executor(executor, workers, address, threads)
    checks.writable_folder(out, "--out")
    store = ResultStore(out)
    store.lock()
    try:
        store.repair()
        from ggl.results import atomic_write_json

        atomic_write_json(store.root / SWEEP_FILE, {
            "name": sweep.name, "source": str(sweep.path) if sweep.path else None,
            "yaml": sweep.text, "axes": sweep.axes,
            "cells": [{"cell_id": c.cell_id, **c.values} for c in sweep.cells]})
        existing = store.records()
        pending = [c for c in sweep.cells
                   if existing.get(c.cell_id, {}).get("status") != "done"]
        summary = SweepSummary(sweep.name, store.index, len(sweep.cells), 0, 0,
                               len(sweep.cells) - len(pending))
        labels = {c.cell_id: c.label() for c in sweep.cells}
        bar = tqdm(total=len(sweep.cells), initial=summary.skipped, desc=sweep.name,
                   unit="cell", disable=quiet, dynamic_ncols=True)
        inner: dict = {}            # cell id -> the bar of its attack's iterations

        def on_progress(cell_id: str, iteration: int, total: int, loss: float) -> None:
            if cell_id not in inner:
                inner[cell_id] = tqdm(total=total, desc=f"  {labels[cell_id]}", unit="it",
                                      leave=False, dynamic_ncols=True)
            cell_bar = inner[cell_id]
            cell_bar.update(iteration - cell_bar.n)
            cell_bar.set_postfix(loss=f"{loss:.4g}", refresh=False)

        def on_record(record: dict) -> None:
            if record["cell_id"] in inner:
                inner.pop(record["cell_id"]).close()
            previous = existing.get(record["cell_id"])
            record["attempt"] = (previous or {}).get("attempt", 0) + 1
            record["sweep"] = sweep.name
            record["finished_at"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
            record = store.append(record)
            existing[record["cell_id"]] = record
            if record["status"] == "done":
                summary.done += 1
            else:
                summary.failed += 1
                if not quiet:
                    bar.write(f"failed: {labels.get(record['cell_id'])} "
                              f"[{record['cell_id']}]: {record['error']}", file=sys.stderr)
            bar.set_postfix(done=summary.done, failed=summary.failed, refresh=False)
            bar.update(1)

        try:
            runner.run([make_task(cell, store) for cell in pending], on_record,
                       None if quiet else on_progress)
        finally:
            for cell_bar in inner.values():
                cell_bar.close()
            bar.close()
        summary.records = {c.cell_id: existing[c.cell_id] for c in sweep.cells
                           if c.cell_id in existing}
        return summary
    finally:
        store.unlock()
