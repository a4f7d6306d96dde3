"""The Prometheus alert rules in deploy/prometheus, checked and unit-tested by promtool."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from reconcile.diff import Kind
from reconcile.metrics import Outcome, RunLabels, write_metrics
from reconcile.report import AuditReport
from tests.helpers import ROOT, require_program

RULES = ROOT / "deploy" / "prometheus" / "reconcile-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "reconcile-alerts.test.yml"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    program = require_program("promtool", "prometheus")
    return subprocess.run(
        [program, *args], capture_output=True, text=True, timeout=120, check=False
    )


def test_the_rules_are_valid() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 5 rules found" in result.stdout


def test_the_rules_pass_their_unit_tests() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_rules_and_their_tests_name_only_metrics_a_run_writes(tmp_path: Path) -> None:
    """A renamed metric would leave an alert that never fires, and tests that still pass."""
    path = tmp_path / "reconcile.prom"
    audit = AuditReport("t", "c", 1, 1, 0, {k.value: 0 for k in Kind}, [], 1.0)
    outcome = Outcome(0, 1.0, audit=audit, repaired=0, failed=0, started=0.0)
    write_metrics(path, RunLabels("repair", "t", "c"), outcome)
    written = {f.name for f in text_string_to_metric_families(path.read_text())}
    for file in (RULES, RULE_TESTS):
        named = set(re.findall(r"\breconcile_[a-z_]+", file.read_text()))
        assert named and named <= written, (file.name, sorted(named - written))
