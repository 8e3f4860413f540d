"""Screenshots of a ``ggl report`` page at narrow and wide widths, with what fits.

Opens ``STORE/report.html`` (written first with ``ggl report``) in headless Chromium at
600 px and 1400 px wide and measures, for every table: its width, the width of the box it
sits in, and whether that box scrolls sideways (``overflow-x: auto``); for the page: the
viewport meta tag and whether anything but a scrolling box is wider than the window (a
table cut off, or the whole page scrolling sideways); for figures: whether each image fits.

Needs Chromium (Debian: ``apt-get install chromium``) and ``pip install playwright`` (its
driver only; no browser download: the system Chromium is used)::

    python experiments/benchmarks/report_screenshots.py experiments/results/compare_lenet \\
        --out experiments/results/report_screenshots

Writes ``OUT/report-<width>px.png`` and ``OUT/measurements.json``; prints one line per width.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

WIDTHS = (600, 1400)
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"]

#: run in the page: every table's fit and the page's own sideways overflow
MEASURE = """() => {
  const tables = [...document.querySelectorAll('table')].map(t => {
    const box = t.parentElement;
    const scrolls = getComputedStyle(box).overflowX === 'auto' ||
                    getComputedStyle(box).overflowX === 'scroll';
    return {columns: t.rows[0] ? t.rows[0].cells.length : 0, table_px: t.scrollWidth,
            box_px: box.clientWidth, box_scrolls: scrolls,
            fits: t.scrollWidth <= box.clientWidth,
            reachable: t.scrollWidth <= box.clientWidth || scrolls};
  });
  const images = [...document.querySelectorAll('img')].map(
      i => ({image_px: i.getBoundingClientRect().width, fits: i.getBoundingClientRect().right
             <= document.documentElement.clientWidth + 0.5}));
  return {viewport_meta: !!document.querySelector('meta[name=viewport]'),
          window_px: window.innerWidth,
          page_px: document.documentElement.scrollWidth,
          page_scrolls_sideways: document.documentElement.scrollWidth > window.innerWidth,
          tables, images};
}"""


def chromium_path() -> str | None:
    """The system Chromium, or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


def measure(report: Path, out: Path, widths=WIDTHS) -> dict:
    """Screenshots and measurements of ``report`` (an HTML file) at each width."""
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    if executable is None:
        raise SystemExit("no Chromium found: apt-get install chromium")
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_FLAGS)
        try:
            for width in widths:
                page = browser.new_page(viewport={"width": width, "height": 900})
                page.goto(report.resolve().as_uri())
                facts = page.evaluate(MEASURE)
                page.screenshot(path=str(out / f"report-{width}px.png"), full_page=False)
                page.close()
                results[str(width)] = facts
        finally:
            browser.close()
    return results


def summary_line(width: str, facts: dict) -> str:
    tables = facts["tables"]
    fitting = sum(t["fits"] for t in tables)
    scrolling = sum(not t["fits"] and t["box_scrolls"] for t in tables)
    cut = sum(not t["reachable"] for t in tables)
    return (f"{width} px: viewport meta {'yes' if facts['viewport_meta'] else 'NO'}; "
            f"{len(tables)} tables: {fitting} fit, {scrolling} scroll in their box, {cut} cut "
            f"off; page wider than the window: {'YES' if facts['page_scrolls_sideways'] else 'no'}"
            f" ({facts['page_px']} px); images that fit: "
            f"{sum(i['fits'] for i in facts['images'])}/{len(facts['images'])}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("store", type=Path, help="a folder holding report.html")
    parser.add_argument("--out", type=Path, default=Path("results/report_screenshots"))
    args = parser.parse_args(argv)
    report = args.store / "report.html"
    if not report.is_file():
        print(f"{report} does not exist: run `ggl report {args.store}` first", file=sys.stderr)
        return 2
    results = measure(report, args.out)
    (args.out / "measurements.json").write_text(json.dumps(results, indent=1) + "\n")
    for width, facts in results.items():
        print(summary_line(width, facts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
