"""What the honest-scoring baseline store says beyond its report table.

    python experiments/benchmarks/honest_baseline_summary.py experiments/results/honest_baseline

For every attack line (attack, optimizer, defense) on each model, over the private digits
that have both the attack and its control done:

* ``found``: digits the judge assigns to the true class, and the PSNR range of the found
  and of the missed ones (does PSNR tell them apart?);
* latent attacks: of the missed digits, how many have a positive search gap (the attack's
  own objective prefers the projected true image: a search failure) and how many a
  negative one (the objective prefers the wrong image);
* the control: digits the judge recognises in the control's reconstruction.
"""
from __future__ import annotations

import sys
from collections import defaultdict


def main(root: str) -> None:
    from ggl.study.store import ResultStore

    lines: dict[tuple, dict] = defaultdict(dict)
    for record in ResultStore(root).records().values():
        if record.get("status") != "done":
            continue
        config, metrics = record["config"], record["metrics"]
        key = (config.get("model", "lenet"), config["attack"],
               (config.get("extra") or {}).get("ng_method", ""),
               "+".join(config["defense"]) or "none", bool(config["adaptive"]))
        lines[key].setdefault(tuple(config["index"]), {})[config.get("control", "none")] = \
            metrics
    print("| model | attack | defense | digits | found | PSNR found | PSNR missed | "
          "missed: gap > 0 / < 0 | control found |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (model, attack, method, defense, adaptive), digits in sorted(lines.items()):
        pairs = [d for d in digits.values() if "none" in d and "random-gradient" in d]
        if not pairs:
            continue
        found = [d["none"] for d in pairs if d["none"]["judge_accuracy"] == 1]
        missed = [d["none"] for d in pairs if d["none"]["judge_accuracy"] != 1]
        span = (lambda ms: "-" if not ms else
                f"{min(m['psnr'] for m in ms):.1f}-{max(m['psnr'] for m in ms):.1f}")
        gaps = "n/a"
        if attack == "ggl":
            gaps = (f"{sum(m['search_gap'] > 0 for m in missed)} / "
                    f"{sum(m['search_gap'] <= 0 for m in missed)}")
        control_found = sum(d["random-gradient"]["judge_accuracy"] == 1 for d in pairs)
        name = f"{attack}-{method}" if method else attack
        shown = f"{defense}{' adaptive' if adaptive else ''}"
        print(f"| {model} | {name} | {shown} | {len(pairs)} | {len(found)} | {span(found)} | "
              f"{span(missed)} | {gaps} | {control_found} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "experiments/results/honest_baseline")
