"""``ggl compare``: pixel vs latent attacks on the same private images, as one small sweep.

A preset grid for :mod:`ggl.study.sweep`: ``attack`` = DLG, iDLG, IG and GGL (or a chosen
subset) x one defense setting (a ``--defense`` chain, default none; ``--adaptive`` for all)
x the private images (one cell per ``--index``, default 0) x the control (``--control``,
default ``random-gradient``: each attack also run on noise in place of the update, shown
beside it in the report with the leak over it; ``none``: the attacks only), with budgets a
CPU finishes in a few minutes (``COMPARE_BUDGETS``: the attacks' own defaults, 300 L-BFGS
steps, 24,000 IG steps and 25,000 GGL evaluations, take an hour or more). The grid is an
ordinary sweep config (a mapping; its YAML is kept in ``OUT/sweep.json``), validated by
:func:`ggl.study.spec.sweep_from_mapping` and run by :func:`ggl.study.sweep.run_sweep` into
the store ``OUT``; then :func:`ggl.study.report.write_report` writes ``OUT/report.html`` and
``OUT/report.md``. Cells have the ids any sweep gives the same runs, so running the same
command with the same ``--out`` resumes (done cells are skipped, failed ones retried).

Example::

    from ggl.study.compare import run_compare
    summary, report = run_compare(attacks=("idlg", "ggl"), index=(0, 1))
    print(report.table)
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Sequence

from ggl import constants
from ggl.errors import GGLError

#: the attacks compared when none are chosen: pixel space (DLG, iDLG, IG) vs latent (GGL)
COMPARE_ATTACKS = ("dlg", "idlg", "ig", "ggl")
#: budgets a 2-core CPU runs in about a minute per private image on LeNet (measured in
#: experiments/README.md: 300 L-BFGS steps of DLG 33 s, of iDLG 26 s; IG 2000 steps 50 s,
#: 25.2 dB; GGL's default search at 2000 evaluations 6.9 s, 27.5 dB on image 0, README
#: "Compare"); attacks not listed keep their defaults
COMPARE_BUDGETS = {"dlg": 100, "idlg": 100, "ig": 2000, "ig-adam": 2000, "ggl": 2000}


def parse_budgets(pairs: Sequence[str], attacks: Sequence[str]) -> dict[str, int]:
    """``["dlg=50", "ggl=500"]`` -> ``{"dlg": 50, "ggl": 500}``, checked against the
    compared attacks.

    Raises:
        GGLError: a pair that is not ATTACK=N, N not a positive integer, or an attack that
            is not compared.
    """
    budgets = {}
    for pair in pairs:
        attack, equals, value = pair.partition("=")
        attack = attack.strip()
        if not equals or not attack:
            raise GGLError(f"--budget expects ATTACK=N (e.g. --budget ig=500 --budget "
                           f"ggl=1000), got {pair!r}")
        if attack not in attacks:
            raise GGLError(f"--budget {pair!r}: {attack!r} is not one of the compared attacks "
                           f"({', '.join(attacks)}; choose them with --attack)")
        try:
            budget = int(value)
        except ValueError:
            raise GGLError(f"--budget {pair!r}: N must be an integer, got {value!r}") from None
        if budget < 1:
            raise GGLError(f"--budget {pair!r}: N must be at least 1, got {budget}")
        budgets[attack] = budget
    return budgets


def compare_config(attacks: Sequence[str] = COMPARE_ATTACKS,
                   budgets: dict[str, int] | None = None, defense: Sequence[str] = (),
                   adaptive: bool = False, index: Sequence[int] = (0,),
                   model: str = "lenet", dataset: str = "mnist", device: str = "auto",
                   seed: int = 0, control: str = "random-gradient",
                   data_root: str | None = None, generator: str | None = None) -> dict:
    """The sweep config (a plain mapping, as YAML would give it) of one comparison.

    Args:
        attacks: attack names (``ggl list``); default DLG, iDLG, IG and GGL.
        budgets: per attack, overriding ``COMPARE_BUDGETS``.
        defense: one ``--defense`` chain applied to every cell (default: none).
        adaptive: every attack models the defense.
        index: private images, one cell per index.
        model, dataset, device, seed: as ``ggl run``'s.
        control: run every cell also under this control (``ggl.controls.CONTROLS``);
            ``none``: the attacks only.
        data_root: the folder holding the dataset's files, as ``ggl run --data-root``.
        generator: GGL's prior, as ``ggl run --generator`` (for the ``ggl`` cells).

    Raises:
        GGLError: an unknown attack or control, or a bad defense spec.
    """
    attacks = list(dict.fromkeys(attacks or COMPARE_ATTACKS))
    defense = [spec.strip() for spec in defense]
    budgets = {**{a: b for a, b in COMPARE_BUDGETS.items() if a in attacks},
               **(budgets or {})}
    index = list(dict.fromkeys(index or (0,)))
    grid = {"attack": attacks, "defense": [defense or "none"], "index": index}
    if control != "none":
        grid["control"] = ["none", control]
    settings = {"model": model, "dataset": dataset, "device": device, "seed": seed,
                "adaptive": bool(adaptive)}
    if data_root is not None:            # only when given: the cell ids stay as they were
        settings["data_root"] = data_root
    options = {a: {"budget": budgets[a]} for a in attacks if a in budgets}
    if generator is not None and "ggl" in attacks:
        options.setdefault("ggl", {})["generator"] = generator
    return {"name": "compare", "settings": settings, "grid": grid, "attack_options": options}


def compare_sweep(**options):
    """The comparison as a validated :class:`ggl.study.grid.Sweep` (keywords of
    :func:`compare_config`); an error in it reads ``ggl compare: ...``."""
    from ggl.study.spec import sweep_from_mapping

    return sweep_from_mapping(compare_config(**options), source="ggl compare")


def default_out() -> Path:
    """``results/compare_<date>-<time>`` (``constants.OUTPUT_DIR``)."""
    return constants.OUTPUT_DIR / f"compare_{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def run_compare(out: str | Path | None = None, workers: int | None = None,
                threads: int | None = None, quiet: bool = False, **options):
    """Run the comparison into the sweep store ``out`` and write its report.

    Args:
        out: the store (default :func:`default_out`); the same folder resumes.
        workers: local worker processes (default 1).
        threads: torch threads per cell (default: cores // workers).
        quiet: no progress bar.
        **options: keywords of :func:`compare_config`.

    Returns:
        ``(SweepSummary, Report)``.
    """
    from ggl.study.report import write_report
    from ggl.study.sweep import run_sweep

    sweep = compare_sweep(**options)
    out = Path(out) if out is not None else default_out()
    summary = run_sweep(sweep, out, workers=workers, threads=threads, quiet=quiet)
    return summary, write_report(out)
