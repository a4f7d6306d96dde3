"""The textfiles of the README's own setups, scraped through the real node_exporter.

Two `--shard` runs and the crontab pair (an incremental and a nightly full repair,
all `command="repair"`) each leave a `.prom` file in one directory. node_exporter 1.5
answers 200 with `node_textfile_scrape_error 0` even when it drops a file whose series
repeat another's, so the test checks what it serves, its log, and its own error counter.
"""

from __future__ import annotations

from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import free_port, http_get, repair_cli, require_program, run_cli, serving
from tests.world import World

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_shards_incremental_and_full_runs_are_all_scraped(world: World, tmp_path: Path) -> None:
    exporter = require_program("prometheus-node-exporter", "prometheus-node-exporter")
    person = world.person()
    for _ in range(6):
        world.face(person, payload={})
    env = world.env()
    textfiles = tmp_path / "textfiles"
    textfiles.mkdir()
    runs = {
        "reconcile-1.prom": ["--shard", "1/2"],
        "reconcile-2.prom": ["--shard", "2/2"],
        "reconcile.prom": ["--incremental", str(tmp_path / "state.json")],
        "reconcile-full.prom": [],
    }
    for name, scope in runs.items():
        metrics = ["--metrics-file", str(textfiles / name)]
        result = repair_cli(tmp_path / f"{name}.jsonl", *metrics, *scope, env=env)
        assert result.returncode == 0, result.stderr

    port = free_port()
    log = tmp_path / "node_exporter.log"
    argv = [
        exporter,
        "--collector.disable-defaults",
        "--collector.textfile",
        f"--collector.textfile.directory={textfiles}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    url = f"http://127.0.0.1:{port}/metrics"
    with serving(argv, url, log):
        scraped = parse(http_get(url))
        again = parse(http_get(url))  # the error counter counts the scrapes before it

    for name in runs:
        written = parse((textfiles / name).read_text(encoding="utf-8"))
        assert written, name
        missing = {key: v for key, v in written.items() if scraped.get(key) != v}
        assert not missing, f"{name}: not served as written: {sorted(missing)[:3]}"
    assert "collected before" not in log.read_text()
    gathering = ("promhttp_metric_handler_errors_total", (("cause", "gathering"),))
    assert again[gathering] == 0
    labels = {
        (dict(k[1])["shard"], dict(k[1])["scope"]) for k in scraped if k[0] == "reconcile_exit_code"
    }
    assert labels == {("1/2", "shard"), ("2/2", "shard"), ("all", "incremental"), ("all", "full")}


def test_an_unwritable_metrics_file_ends_the_run_at_once_in_one_line(
    world: World, tmp_path: Path
) -> None:
    world.face(world.person(), payload={})  # drift: exit 1 if the run went on
    path = tmp_path / "absent" / "reconcile.prom"
    result = run_cli("audit", "--metrics-file", str(path), env=world.env())
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert line.startswith("reconcile: error: cannot write metrics file") and str(path) in line
    assert not path.parent.exists()
