"""Running a sweep's cells: :func:`run_cell` (one cell, in whichever process) and the
executors that call it.

Executors (every executor runs the same :func:`run_cell`; the parent writes the store as
each cell finishes, so a kill loses only the cells in flight):

* ``local`` (default): ``workers=1`` runs cells one after another in this process;
  ``workers=N`` in N spawned processes (``concurrent.futures``).
* ``ray``: one Ray task per cell, on a local Ray instance started for the sweep (no
  ``address``) or on a cluster (``address``, e.g. one started with ``ray start --head``).
  ``workers`` caps the tasks in flight. On a cluster of several machines ``--out`` must be
  on a filesystem every node sees (workers write the run folders; the driver the index),
  and ggl must be installed on every node. Needs ``pip install "ggl[ray]"``.

Each cell sets ``torch.set_num_threads(threads)``, ``threads = max(1, cores // workers)``
by default, so parallel workers do not oversubscribe the cores. Runs are seeded; on the CPU
a cell gives the same metrics with every executor (tested).

A task (:func:`make_task`) is what a worker needs to run one cell: plain data, picklable
and JSON-able; :func:`run_cell` turns it into the cell's record (``ggl.study.store``).

The local executor also reports each running cell's inner progress (the attack's
iterations) through ``on_progress(cell_id, iteration, total, loss)``: directly in this
process, through a queue from worker processes (at most every ``PROGRESS_EVERY_S``); Ray
tasks report none.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
import traceback
from typing import Callable, Sequence

from ggl.config import RunConfig
from ggl.errors import GGLError
from ggl.study.grid import Cell
from ggl.study.store import ResultStore, add_run, new_record

EXECUTORS = ("local", "ray")
#: a worker process sends a running cell's progress at most this often (seconds)
PROGRESS_EVERY_S = 0.5

#: ``on_progress(cell_id, iteration, total, loss)``
CellProgress = Callable[[str, int, int, float], None]


def make_task(cell: Cell, store: ResultStore, threads: int | None = None) -> dict:
    """What a worker needs to run a cell: plain data, picklable and JSON-able."""
    config = dataclasses.replace(cell.config, out=str(store.run_dir(cell.cell_id)))
    return {"cell_id": cell.cell_id, "cell": cell.values, "config": config.to_dict(),
            "threads": threads}


def _new_record(task: dict) -> dict:
    return new_record(task["cell_id"], task["cell"], task["config"])


def failed_record(task: dict, error: str, trace: str | None = None) -> dict:
    """The record of a cell that failed outside :func:`run_cell` (e.g. its worker died)."""
    record = _new_record(task)
    record.update(error=error, traceback=trace)
    return record


def run_cell(task: dict, progress: Callable[[int, int, float], None] | None = None) -> dict:
    """Run one cell with ``ggl.api.run(config, write=True)`` and return its record.

    Never raises for a failing run: an exception, or a non-finite loss, gives a record with
    ``status: failed`` and the error. Runs in whichever process the executor chose;
    ``progress(iteration, total, loss)`` follows the attack as ``ggl run``'s bar does.
    """
    import torch

    from ggl import api

    if task.get("threads"):
        torch.set_num_threads(task["threads"])
    record = _new_record(task)
    started = time.perf_counter()
    try:
        config_dict = dict(task["config"])
        for name in ("index", "defense"):
            config_dict[name] = tuple(config_dict[name])
        # the store owns its run folders: a retried cell replaces its earlier attempt
        run = api.run(RunConfig(**config_dict), progress, write=True, overwrite=True).record
        add_run(record, run)
        loss = float(run["loss"])
        if math.isfinite(loss):
            record["status"] = "done"
        else:
            record["error"] = f"the gradient-matching loss is {loss} (not finite)"
    except Exception as err:                  # noqa: BLE001 -- a failed cell is recorded
        record["error"] = str(err) if isinstance(err, GGLError) else \
            f"{type(err).__name__}: {err}"
        if not isinstance(err, GGLError):
            record["traceback"] = traceback.format_exc(limit=-12)
    record["wall_time_s"] = time.perf_counter() - started
    return record


def available_cores() -> int:
    """CPU cores this process may use (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


_progress_queue = None          # a worker process's queue to the parent (set at its start)


def _init_worker(threads: int, progress_queue=None) -> None:
    import torch

    global _progress_queue
    torch.set_num_threads(threads)
    _progress_queue = progress_queue


def _run_cell_in_worker(task: dict) -> dict:
    """:func:`run_cell` in a worker process, its progress sent to the parent's queue."""
    queue, last_sent = _progress_queue, [0.0]

    def progress(iteration: int, total: int, loss: float) -> None:
        now = time.monotonic()
        if queue is not None and (now - last_sent[0] >= PROGRESS_EVERY_S or iteration >= total):
            last_sent[0] = now
            queue.put((task["cell_id"], iteration, total, float(loss)))
    return run_cell(task, progress)


def _drain(queue, on_progress: CellProgress | None) -> None:
    import queue as queues

    while True:
        try:
            message = queue.get_nowait()
        except (queues.Empty, OSError, ValueError):
            return
        if on_progress is not None:
            on_progress(*message)


class LocalExecutor:
    """Cells in this process (``workers=1``) or in ``workers`` spawned processes."""

    def __init__(self, workers: int = 1, threads: int | None = None):
        self.workers = workers
        self.threads = threads or max(1, available_cores() // workers)

    def run(self, tasks: Sequence[dict], on_record: Callable[[dict], None],
            on_progress: CellProgress | None = None) -> None:
        for task in tasks:
            task["threads"] = self.threads
        if self.workers == 1:
            import torch

            previous = torch.get_num_threads()
            try:
                for task in tasks:
                    progress = None if on_progress is None else (
                        lambda i, n, loss, cell_id=task["cell_id"]: on_progress(cell_id, i, n, loss))
                    on_record(run_cell(task, progress))
            finally:
                torch.set_num_threads(previous)
            return
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        context = multiprocessing.get_context("spawn")
        progress_queue = context.Queue()
        pool = ProcessPoolExecutor(max_workers=self.workers, mp_context=context,
                                   initializer=_init_worker,
                                   initargs=(self.threads, progress_queue))
        try:
            futures = {pool.submit(_run_cell_in_worker, task): task for task in tasks}
            running = set(futures)
            while running:
                finished, running = wait(running, timeout=PROGRESS_EVERY_S,
                                         return_when=FIRST_COMPLETED)
                _drain(progress_queue, on_progress)
                for future in finished:
                    self._record(future, futures[future], on_record)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            progress_queue.close()
        pool.shutdown(wait=True)

    @staticmethod
    def _record(future, task: dict, on_record: Callable[[dict], None]) -> None:
        from concurrent.futures.process import BrokenProcessPool

        try:
            record = future.result()
        except BrokenProcessPool:
            raise GGLError("a sweep worker process died (out of memory? killed?); the cells "
                           "finished so far are stored: run the same command again to "
                           "resume") from None
        except Exception as err:      # noqa: BLE001 -- e.g. an unpicklable result
            record = failed_record(task, f"{type(err).__name__}: {err}")
        on_record(record)


class RayExecutor:
    """One Ray task per cell, on a local Ray instance (no ``address``) or a cluster.

    Each task reserves ``threads`` CPUs and sets torch to that many threads, so Ray never
    runs more tasks than there are cores; ``workers`` also caps the tasks in flight.
    """

    def __init__(self, address: str | None = None, workers: int | None = None,
                 threads: int | None = None):
        self.address = address
        self.workers = workers
        self.threads = threads

    @staticmethod
    def _import_ray():
        try:
            import ray
        except ImportError:
            raise GGLError('the ray executor needs Ray, which is not installed: '
                           'pip install "ggl[ray]" (or use --executor local)') from None
        return ray

    def _start(self, ray) -> bool:
        """Connect to (or start) Ray; True when this executor started it."""
        if ray.is_initialized():
            return False
        try:
            if self.address:
                ray.init(address=self.address, logging_level=logging.WARNING,
                         log_to_driver=False)
            else:
                ray.init(num_cpus=available_cores(), include_dashboard=False,
                         logging_level=logging.WARNING, log_to_driver=False)
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = f"the Ray cluster at {self.address}" if self.address else "a local Ray"
            raise GGLError(f"could not start or reach {where}: {err} (start a cluster with "
                           f"`ray start --head` and pass its address, or omit --address "
                           f"for a local one)") from None
        return True

    def _threads(self, ray) -> int:
        """CPUs (= torch threads) per task: ``threads``, else the cluster's CPUs shared by
        ``workers`` tasks, else 1; never more than the largest node has (Ray would wait
        forever for a task no node can hold)."""
        nodes = [node["Resources"].get("CPU", 0) for node in ray.nodes() if node["Alive"]]
        largest = max(1, int(max(nodes, default=1)))
        if self.threads:
            wanted = self.threads
        elif self.workers:
            wanted = int(sum(nodes)) // self.workers
        else:
            wanted = 1
        return max(1, min(largest, wanted))

    def run(self, tasks: Sequence[dict], on_record: Callable[[dict], None],
            on_progress: CellProgress | None = None) -> None:
        """As :meth:`LocalExecutor.run`; Ray tasks report no inner progress."""
        ray = self._import_ray()
        started = self._start(ray)
        try:
            threads = self._threads(ray)
            remote = ray.remote(num_cpus=threads, max_retries=0)(run_cell)
            queue = list(tasks)
            limit = self.workers or len(queue)
            running: dict = {}
            try:
                while queue or running:
                    while queue and len(running) < limit:
                        task = queue.pop(0)
                        task["threads"] = threads
                        running[remote.remote(task)] = task
                    ready, _ = ray.wait(list(running), num_returns=1)
                    for ref in ready:
                        task = running.pop(ref)
                        try:
                            record = ray.get(ref)
                        except Exception as err:    # noqa: BLE001 -- a crashed task
                            record = failed_record(task, f"{type(err).__name__}: "
                                                         f"{str(err).strip()[-2000:]}")
                        on_record(record)
            except BaseException:
                for ref in running:
                    ray.cancel(ref, force=True)
                raise
        finally:
            if started:
                ray.shutdown()


def make_executor(executor: str = "local", workers: int | None = None,
                  address: str | None = None, threads: int | None = None):
    """``local`` or ``ray``, checked; see the module docstring."""
    if executor not in EXECUTORS:
        raise GGLError(f"unknown executor {executor!r}; valid executors: {', '.join(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise GGLError(f"--workers must be at least 1, got {workers}")
    if threads is not None and threads < 1:
        raise GGLError(f"--threads must be at least 1, got {threads}")
    if executor == "local":
        if address:
            raise GGLError("--address is the Ray cluster's address: use it with --executor ray")
        return LocalExecutor(workers or 1, threads)
    executor = RayExecutor(address, workers, threads)
    executor._import_ray()             # fail before anything runs
    return executor

