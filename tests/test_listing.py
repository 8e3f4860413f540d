"""``ggl list`` prints a shipped copy of the registries' listing (``ggl/listing.json``):
the copy must match the registries, and the command must not import torch."""
import json
import subprocess
import sys

import pytest

from ggl import listing
from ggl.optimizers import OPTIMIZERS

STALE = ("ggl/listing.json no longer matches the registries: run "
         "`python -m ggl.listing --write` and commit the file")


@pytest.fixture(scope="module")
def record():
    return json.loads(listing.SHIPPED.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def live():
    return listing.render()


def test_the_shipped_copy_matches_the_registries(record):
    assert record["lines"] == listing.render_own().splitlines(), STALE
    assert record["ggl_optimizers"] == OPTIMIZERS.names(include_more=False), STALE
    if record["nevergrad_version"] == listing.installed_nevergrad():
        assert record["nevergrad_names"] == listing.registered_nevergrad_names(), STALE


def test_ggl_list_prints_the_live_listing_without_torch(record, live):
    code = ("import sys\nfrom ggl.cli import main\n"
            "try:\n    main(['list'])\nexcept SystemExit:\n    pass\n"
            "imported = [name for name in sys.argv[1:] if name in sys.modules]\n"
            "assert not imported, f'ggl list imported {imported}'")
    unwanted = ["torch"]
    if record["nevergrad_version"] == listing.installed_nevergrad():
        unwanted.append("nevergrad")      # its names are in the copy
    result = subprocess.run([sys.executable, "-c", code, *unwanted], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout == live + "\n"


def test_another_nevergrad_version_has_its_names_read_live(monkeypatch, live):
    monkeypatch.setattr(listing, "installed_nevergrad", lambda: "0.0.0")
    assert listing.listing() == live


@pytest.mark.parametrize("content", [None, "not json", '{"lines": 3}'])
def test_a_missing_or_unreadable_copy_falls_back_to_the_live_listing(
        tmp_path, monkeypatch, live, content):
    copy = tmp_path / "listing.json"
    if content is not None:
        copy.write_text(content)
    monkeypatch.setattr(listing, "SHIPPED", copy)
    assert listing.listing() == live


def test_the_data_root_is_this_machines(monkeypatch, tmp_path):
    monkeypatch.setattr(listing.constants, "DATA_ROOT", tmp_path / "data")
    assert f"GGL_DATA_ROOT or {tmp_path / 'data'}):" in listing.listing()
