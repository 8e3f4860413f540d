"""The study wing: many runs at once (``ggl sweep``, ``ggl compare``) and their reports
(``ggl report``), on top of single runs (:func:`ggl.api.run`).

Modules, and what each may import (besides the standard library, ``ggl.errors`` and
``ggl.results``):

* :mod:`ggl.study.spec`: a sweep config (YAML text or a plain mapping) -> a validated
  :class:`~ggl.study.grid.Sweep`; imports ``ggl.config``, :mod:`~ggl.study.fields`,
  :mod:`~ggl.study.grid` and :mod:`~ggl.study.yaml_lines`, and ``ggl.attacks`` to check
  attack options;
* :mod:`ggl.study.fields`: one config value checked (a RunConfig field, a defense entry);
  imports ``ggl.config``, :mod:`~ggl.study.yaml_lines` and the registries it checks names
  against (attacks, models, datasets, controls, ``ggl.defenses.parse_defenses``);
* :mod:`ggl.study.yaml_lines`: YAML that remembers its line numbers; imports only yaml;
* :mod:`ggl.study.grid`: the grid's cells, their canonical configs and ids; imports
  ``ggl.config``, and ``ggl.plan`` to resolve every cell before any runs;
* :mod:`ggl.study.store`: the result store (``index.jsonl``, ``runs/``) and its records;
  imports nothing else of ggl;
* :mod:`ggl.study.executors`: running cells (in this process, in worker processes, on Ray);
  imports the grid, the store and, where a cell runs, ``ggl.api``;
* :mod:`ggl.study.sweep`: the driver, :func:`~ggl.study.sweep.run_sweep`; imports the spec,
  the grid, the store and the executors;
* :mod:`ggl.study.compare`: ``ggl compare``, a preset sweep built as a mapping; imports the
  spec, the driver and the report;
* :mod:`ggl.study.report`: records -> tables, figures, Markdown and HTML; reads records
  through the store only (never the spec, the executors or the driver), and
  ``ggl.defenses`` for the name of a defense's parameter on a plot's axis (and to resolve
  the defense chains of records older than the canonical ``defenses`` field).
"""
