"""Where one full audit spends its time: py-spy when installed, else pyinstrument.

py-spy watches one audit in a fresh process (`audit_once`, all threads, native
frames) and its raw stacks are summed here by activity; the fallback, the
`profile` task, runs pyinstrument inside the child. `profile_text` prints either.
(Not named `profile.py`: run as a script, bench/ is on sys.path, where such a
module would shadow the standard library's `profile`, which cProfile imports.)
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from bench.measure import check, settings_for, timed
from bench.runner import child_command, last_result, progress, run_child

SPY_RATE = 100  # samples per second: py-spy pauses the process for each native unwind


# --- in the child ------------------------------------------------------------------


def task_audit_once(spec: dict[str, Any]) -> dict[str, Any]:
    """One audit in a fresh process (what py-spy watches)."""
    from reconcile.ops.audit import audit

    report, seconds = timed(lambda: audit(settings_for(spec)))
    check(report, spec)
    return {"seconds": seconds}


def task_profile(spec: dict[str, Any]) -> dict[str, Any]:
    """pyinstrument over one full audit: the top functions by own time, and some subtotals."""
    try:
        from pyinstrument import Profiler
    except ImportError:
        return {"missing": "neither py-spy nor pyinstrument is installed in this venv"}

    from reconcile.ops.audit import audit
    from reconcile.stores import Stores

    settings = settings_for(spec)
    with Stores(settings) as stores:
        stores.postgres.inspect()
        profiler = Profiler(interval=0.001)
        profiler.start()
        report = audit(settings, stores=stores)
        profiler.stop()
    check(report, spec)
    session = profiler.last_session
    assert session is not None
    root = session.root_frame()
    assert root is not None
    own: dict[str, float] = defaultdict(float)
    total: dict[str, float] = defaultdict(float)

    def walk(frame: Any, ancestors: frozenset[str]) -> None:
        if frame.is_synthetic:  # pyinstrument's "[self]" leaves: counted by total_self_time
            return
        name = f"{frame.function} ({_short(frame.file_path)}:{frame.line_no})"
        own[name] += frame.total_self_time
        if name not in ancestors:  # recursion counted once
            total[name] += frame.time
        for child in frame.children:
            walk(child, ancestors | {name})

    walk(root, frozenset())
    top_own = sorted(own.items(), key=lambda kv: -kv[1])[:20]
    top_total = sorted(
        ((k, v) for k, v in total.items() if "reconcile" in k or "qdrant_edge" in k),
        key=lambda kv: -kv[1],
    )[:20]
    out_file = Path(spec["profile_html"])
    out_file.write_text(profiler.output_html())
    return {
        "duration": session.duration,
        "own": top_own,
        "total": top_total,
        "html": str(out_file),
    }


def _short(path: str | None) -> str:
    if not path:
        return "?"
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return Path(path).name


# --- in the parent -----------------------------------------------------------------


def run_profile(spec: dict[str, Any], root: Path) -> dict[str, Any]:
    """py-spy over one audit in a fresh process (all threads, native frames), else pyinstrument."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    raw = root / f"profile-{spec['name']}.txt"
    if Path(spy).is_file():
        command = [spy, "record", "--rate", str(SPY_RATE), "--idle", "--threads", "--native"]
        command += ["--format", "raw", "-o", str(raw), "--"]
        command += child_command("audit_once", spec)
        started = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        result = last_result(proc.stdout)
        if proc.returncode == 0 and result is not None and raw.is_file():
            progress(spec, "py-spy", time.perf_counter() - started)
            return {"tool": "py-spy", "seconds": result["seconds"], "threads": spy_summary(raw)}
        sys.stderr.write(f"py-spy failed ({proc.returncode}), using pyinstrument\n")
    return run_child("profile", spec) | {"tool": "pyinstrument"}


_PY_FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^()]*\.py):(?P<line>\d+)\)$")
_THREAD = re.compile(r"^thread \((?P<tid>\d+)\)(?:: (?P<name>.*))?$")


# What a thread was doing, told by its native frames below the innermost Python one;
# the first match wins. A threading lock (the prefetch queue) waits in
# PyThread_acquire_lock; the GIL waits in a bare pthread_cond_timedwait (take_gil
# has no symbol of its own).
_NATIVE_ACTIVITIES = (
    ("waiting on the prefetch queue", ("PyThread_acquire_lock", "sem_")),
    ("waiting for the GIL", ("pthread_cond_timedwait", "take_gil")),
    ("engine scroll (Rust, incl. building uuid.UUID ids)", ("qdrant_edge",)),
    ("waiting for PostgreSQL (socket)", ("poll", "recv", "select")),
    ("psycopg/libpq C code", ("_psycopg", "libpq")),
)


def _spy_category(frames: list[str]) -> tuple[str, str]:
    """(what the thread was doing, its innermost Python function) for one py-spy stack."""
    last = max((i for i, f in enumerate(frames) if _PY_FRAME.match(f)), default=-1)
    leaf = _PY_FRAME.match(frames[last]) if last >= 0 else None
    leaf_name = f"{leaf['func']} ({_short(leaf['file'])})" if leaf else "?"
    native = ";".join(frames[last + 1 :])
    if any("gc_collect" in f for f in frames):
        return "garbage collector", leaf_name
    if leaf is not None and leaf["func"] in {"lock.acquire", "Condition.wait"}:
        return "waiting on the prefetch queue", leaf_name
    for what, markers in _NATIVE_ACTIVITIES:
        if any(marker in native for marker in markers):
            return what, leaf_name
    return "Python", leaf_name


def spy_summary(raw: Path) -> dict[str, Any]:
    """Shares of each thread's wall time by activity, and its top Python functions."""
    names: dict[str, str] = {}
    activity: dict[str, Counter[str]] = defaultdict(Counter)
    python: dict[str, Counter[str]] = defaultdict(Counter)
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        thread = _THREAD.match(frames[0])
        if thread is None or not count.isdigit():
            continue
        if thread["name"]:
            names[thread["tid"]] = thread["name"]
        # Only the audit: not imports, not interpreter start-up.
        if not any(f.startswith(("audit (reconcile/", "prefetched.")) for f in frames):
            continue
        what, leaf = _spy_category(frames[1:])
        activity[thread["tid"]][what] += int(count)
        if what == "Python":
            python[thread["tid"]][leaf] += int(count)
    threads = {}
    for tid, counts in activity.items():
        total = sum(counts.values())
        threads[names.get(tid, tid)] = {
            "samples": total,
            "activity": [(k, v / total) for k, v in counts.most_common()],
            "python": [(k, v / total) for k, v in python[tid].most_common(12)],
        }
    return threads


def profile_text(profile: dict[str, Any]) -> str:
    """The profile as the block printed after the tables."""
    if "missing" in profile:
        return f"Profile skipped: {profile['missing']} (pip install py-spy)"
    if profile["tool"] == "py-spy":
        return _spy_text(profile)
    return _pyinstrument_text(profile)


def _spy_text(profile: dict[str, Any]) -> str:
    lines = [
        f"Profile of one {profile['label']} audit in a fresh process (py-spy --native "
        f"--idle, {SPY_RATE} Hz; {profile['seconds']:.1f}s under the profiler)"
    ]
    for thread, data in profile["threads"].items():
        lines.append(f"  thread {thread} ({data['samples']:,} samples): share of its wall time")
        lines += [f"    {share:6.1%}  {what}" for what, share in data["activity"]]
        lines.append("    of which Python, by innermost function:")
        lines += [f"      {share:6.1%}  {name}" for name, share in data["python"][:10]]
    return "\n".join(lines)


def _pyinstrument_text(profile: dict[str, Any]) -> str:
    lines = [f"Profile of the {profile['label']} audit (pyinstrument, {profile['duration']:.1f}s)"]
    lines.append("  own time:")
    lines += [f"    {secs:6.2f}s  {name}" for name, secs in profile["own"][:15]]
    lines.append("  inclusive time (reconcile and the engine):")
    lines += [f"    {secs:6.2f}s  {name}" for name, secs in profile["total"][:15]]
    lines.append(f"  (full profile: {profile['html']})")
    return "\n".join(lines)
