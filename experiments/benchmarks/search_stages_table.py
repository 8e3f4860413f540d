"""The search issue's variant table from sweep stores: one row per defense x search.

    python experiments/benchmarks/search_stages_table.py experiments/results/search_stages \
        [experiments/results/conditional_prior ...]

Reads each store's ``index.jsonl`` and the runs' ``run.json`` (for the resolved search
and prior) and prints a Markdown table: judge (found / done), identifiability, PSNR
(mean ± sd), the prior's ceiling, the search gap (mean, and how many cells had it > 0),
the attack's wall time, and -- where the store has random-gradient controls -- the
control's judge and PSNR and the leak over it (attack - control, paired by digit).
"""
from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path


def _mean_sd(values: list[float], digits: int) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.fmean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _rows(store: Path) -> list[dict]:
    rows = []
    for line in (store / "index.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record.get("status") != "done":
            continue
        run = json.loads((store / record["run_dir"] / "run.json").read_text())
        info = run["info"]
        search = ",".join(info["stages"]) + (f" x{info['starts']}" if info["starts"] > 1 else "")
        holdout = record["config"]["extra"].get("holdout")
        prior = Path(info["generator"].partition(":")[2]).name
        rows.append({"defense": "+".join(record["config"]["defense"]) or "none",
                     "search": search + (f" holdout {holdout}" if holdout else ""),
                     "prior": prior, "control": record["config"]["control"],
                     "digit": tuple(record["config"]["index"]),
                     "returned": info["returned_stage"], "metrics": record["metrics"],
                     "seconds": record["attack_wall_time_s"]})
    return rows


def main(stores: list[str]) -> None:
    rows = [row for store in stores for row in _rows(Path(store))]
    groups: dict[tuple, dict] = {}
    for row in rows:
        key = (row["defense"], row["prior"], row["search"])
        groups.setdefault(key, {"none": {}, "random-gradient": {}})[row["control"]][
            row["digit"]] = row
    header = ["defense", "prior", "search", "judge", "identif.", "PSNR (dB)", "ceiling (dB)",
              "search gap (> 0)", "attack s", "control judge", "control PSNR",
              "leak PSNR", "returned"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for (defense, prior, search), cells in groups.items():
        attack, control = cells["none"], cells["random-gradient"]
        if not attack:
            continue
        metric = lambda cell, key: cell["metrics"].get(key)   # noqa: E731
        judged = [metric(c, "judge_accuracy") for c in attack.values()]
        gaps = [metric(c, "search_gap") for c in attack.values()
                if metric(c, "search_gap") is not None]
        returned: dict[str, int] = {}
        for cell in attack.values():
            returned[cell["returned"]] = returned.get(cell["returned"], 0) + 1
        paired = [d for d in attack if d in control]
        cells_out = [
            defense, prior, search, f"{sum(judged):.0f}/{len(judged)}",
            f"{sum(metric(c, 'identifiability') for c in attack.values()):.0f}/{len(attack)}",
            _mean_sd([metric(c, "psnr") for c in attack.values()], 2),
            _mean_sd([metric(c, "ceiling_psnr") for c in attack.values()], 1),
            (f"{statistics.fmean(gaps):+.3f} ({sum(g > 0 for g in gaps)})" if gaps else "-"),
            _mean_sd([c["seconds"] for c in attack.values()], 1),
            (f"{sum(metric(control[d], 'judge_accuracy') for d in paired):.0f}/{len(paired)}"
             if paired else "-"),
            _mean_sd([metric(control[d], "psnr") for d in paired], 2) if paired else "-",
            _mean_sd([metric(attack[d], "psnr") - metric(control[d], "psnr") for d in paired],
                     2) if paired else "-",
            ", ".join(f"{k} {v}" for k, v in returned.items())]
        print("| " + " | ".join(cells_out) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
