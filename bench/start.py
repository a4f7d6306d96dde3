"""What cron pays before any work: `reconcile --version`, `--help`, and `check` against a
Qdrant server, each a fresh process (issue 15: 0.3 s, 0.3 s, and 0.5 s plus the queries).

    .venv/bin/python bench/start.py [--repeat 7] [--database-url URL]

The server is tests/qdrant_rest.py's REST stand-in (no Qdrant server binary exists
for these machines), answering from a local-mode store of 1,000 faces; PostgreSQL is
the given server (default: the system one over loopback TCP), a schema of its own.
`check`'s queries are timed in this process too, warm (the same `check()` call, run
twice, the second measured): a fresh process's wall time minus that is what starting
costs. Best and median of `--repeat`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import psycopg  # noqa: E402

from reconcile.ops.check import check  # noqa: E402
from reconcile.settings import Settings  # noqa: E402
from tests.helpers import with_query  # noqa: E402
from tests.qdrant_rest import serving  # noqa: E402
from tests.world import World  # noqa: E402


def fresh(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        subprocess.run(argv, env=env, capture_output=True, check=False)
        times.append(time.perf_counter() - began)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args()
    schema = f"start_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(args.database_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    url = with_query(args.database_url, options=f"-csearch_path={schema}")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            world = World(url, Path(tmp) / "qdrant")
            person = world.person()
            for n in range(1000):
                world.face(person if n % 2 else None)
            assert world.client is not None
            with serving(world.client) as qdrant_url:
                settings = Settings(url, qdrant_url=qdrant_url, flag_key="is_assigned")
                check(settings)
                began = time.perf_counter()
                report = check(settings)
                queries = time.perf_counter() - began
                assert not report.problems, report.problems
                env = {**os.environ, "DATABASE_URL": url, "QDRANT_URL": qdrant_url}
                cli = [sys.executable, "-m", "reconcile"]
                rows = {
                    "--version": fresh([*cli, "--version"], env, args.repeat),
                    "--help": fresh([*cli, "--help"], env, args.repeat),
                    "check (server)": fresh(
                        [*cli, "check", "--flag-key", "is_assigned"], env, args.repeat
                    ),
                }
            world.close()
    finally:
        with psycopg.connect(args.database_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    print(
        f"load average {os.getloadavg()[0]:.2f}; check's queries, warm, in-process: {queries:.3f} s"
    )
    print("| command | best (s) | median (s) |")
    print("|---|---:|---:|")
    for name, times in rows.items():
        print(f"| `reconcile {name}` | {min(times):.3f} | {statistics.median(times):.3f} |")


if __name__ == "__main__":
    main()
