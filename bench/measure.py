"""What the children measure with: time, memory, and the world they measure.

Memory is measured above the level the process holds once the stores are open:
RssAnon from /proc/self/status sampled every few milliseconds (`PeakRss`), and
the Python heap's peak via tracemalloc in a separate, traced run (`heap_peak`).
"""

from __future__ import annotations

import shutil
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from bench.worlds import FLAG_KEY


def rss_anon() -> int:
    """Anonymous resident memory of this process, in bytes (heap, arenas, thread stacks)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


class PeakRss:
    """Samples RssAnon every `interval` seconds in a thread; `peak` is the highest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.base = rss_anon()
        self.peak = self.base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.peak = max(self.peak, rss_anon())

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_anon())

    @property
    def growth(self) -> int:
        return self.peak - self.base


def heap_peak(fn: Callable[[], Any]) -> tuple[Any, int, float]:
    """(result, peak growth of the traced Python heap in bytes, seconds under tracing)."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return result, peak, seconds


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - started


def drain(items: Iterable[object]) -> int:
    n = 0
    for _ in items:
        n += 1
    return n


def settings_for(spec: dict[str, Any], edge_path: str | None = None) -> Any:
    """The product's settings for the world in `spec` (or for a copy of its edge store)."""
    from reconcile.settings import Settings

    return Settings(
        database_url=spec["database_url"],
        qdrant_edge=edge_path or spec["edge_path"],
        flag_key=FLAG_KEY,
    )


def check(report: Any, spec: dict[str, Any]) -> None:
    """Fail unless the audit found exactly the drift the world was built with."""
    if dict(report.counts) != spec["expected"]:
        raise AssertionError(f"audit found {dict(report.counts)}, world has {spec['expected']}")


def scratch_copy(spec: dict[str, Any]) -> Path:
    """A private copy of the world's edge store, for runs that write to it."""
    scratch = Path(spec["scratch"])
    if scratch.exists():
        shutil.rmtree(scratch)
    shutil.copytree(spec["edge_path"], scratch)
    return scratch
