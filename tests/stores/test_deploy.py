"""The deploy files work as shipped: the systemd units pass the real `systemd-analyze
verify`, the Kubernetes CronJob runs its shards as an Indexed Job, and every command
line in them parses with the real CLI."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import reconcile.cli
from reconcile.cli.scope import Scope, fail_on_kinds
from reconcile.config import ENV_VARS
from reconcile.errors import ConfigError
from tests.helpers import ROOT, require_program, run_cli

DEPLOY = ROOT / "deploy"
SYSTEMD = DEPLOY / "systemd"
MANIFEST = DEPLOY / "kubernetes" / "reconcile-cronjob.yaml"
README = (ROOT / "README.md").read_text()
# The reconcile this test runs: the one installed beside the interpreter (the venv's bin).
INSTALLED = Path(sys.executable).parent / "reconcile"
# What systemd makes of %S in a system unit, for reading the units' paths.
STATE = "/var/lib"


def cli_params(argv: list[str]) -> dict[str, Any]:
    """Parse `argv` (command first) with the real CLI's parser, as a run would: an unknown
    option, a missing value or a value of the wrong type fails here."""
    command = reconcile.cli.load(argv[0])
    params: dict[str, Any] = command.make_context(argv[0], list(argv[1:])).params
    fail_on_kinds(params.get("fail_on"))
    return params


# --- systemd ---------------------------------------------------------------------------


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` to its values, in order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def exec_start(path: Path) -> list[str]:
    (line,) = unit_settings(path)["Service.ExecStart"]
    return shlex.split(line)


def verify_problems(units: dict[str, str], tmp_path: Path, binary: Path = INSTALLED) -> str:
    """Everything `systemd-analyze verify` says about these units (name: text), with
    ExecStart pointed at `binary` (the installed reconcile), which must exist. Warnings
    count: verify exits 0 on an unknown key or a value it cannot parse, ignoring it."""
    analyze = require_program("systemd-analyze", "systemd")
    for name, text in units.items():
        pointed = re.sub(r"^ExecStart=\S+", f"ExecStart={binary}", text, flags=re.MULTILINE)
        (tmp_path / name).write_text(pointed)
    done = subprocess.run(
        [analyze, "verify", "--man=no", *(f"./{name}" for name in units)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    said = (done.stdout + done.stderr).strip()
    return said or ("" if done.returncode == 0 else f"exit {done.returncode}")


def shipped_units() -> dict[str, str]:
    units = sorted([*SYSTEMD.glob("*.service"), *SYSTEMD.glob("*.timer")])
    assert units, f"no units in {SYSTEMD}"
    return {path.name: path.read_text() for path in units}


def test_the_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert INSTALLED.exists(), f"{INSTALLED}: install the package into the test's venv"
    assert verify_problems(shipped_units(), tmp_path) == ""


@pytest.mark.parametrize(
    ("broken", "edit"),
    [
        ("a misspelt directive", ("ProtectSystem=strict", "ProtectSystm=strict")),
        ("a value systemd cannot parse", ("Type=oneshot", "Type=oneshoot")),
        ("a misspelt section", ("[Service]", "[Servce]")),
        ("a bad specifier", ("XDG_STATE_HOME=%S", "XDG_STATE_HOME=%Q")),
    ],
)
def test_verify_finds_a_broken_unit(tmp_path: Path, broken: str, edit: tuple[str, str]) -> None:
    """The check above can fail: each of these breaks reconcile.service for verify."""
    text = (SYSTEMD / "reconcile.service").read_text()
    assert edit[0] in text
    problems = verify_problems({"reconcile.service": text.replace(*edit)}, tmp_path)
    assert problems, f"verify did not notice {broken}"


def test_verify_finds_a_missing_program(tmp_path: Path) -> None:
    text = (SYSTEMD / "reconcile.service").read_text()
    problems = verify_problems({"reconcile.service": text}, tmp_path, tmp_path / "nope")
    assert "is not executable" in problems


@pytest.mark.parametrize("service", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_each_service_is_a_hardened_oneshot_that_can_write_what_it_writes(
    service: str,
) -> None:
    path = SYSTEMD / service
    unit = unit_settings(path)
    assert unit["Service.Type"] == ["oneshot"]
    assert unit["Service.EnvironmentFile"] == ["/etc/reconcile/reconcile.env"]
    assert unit["Service.DynamicUser"] == ["yes"]
    assert unit["Service.ProtectSystem"] == ["strict"]
    # reconcile keeps its journals in $XDG_STATE_HOME/reconcile: StateDirectory=reconcile
    # is %S/reconcile, the one directory besides ReadWritePaths= the unit may write.
    assert unit["Service.StateDirectory"] == ["reconcile"]
    assert "XDG_STATE_HOME=%S" in unit["Service.Environment"]
    argv = [arg.replace("%S", STATE) for arg in exec_start(path)]
    assert Path(argv[0]).name == "reconcile"
    params = cli_params(argv[1:])
    assert params["log_format"] == "json"
    assert params["yes"], "a timer has no terminal to answer the question"
    writable = [Path(p) for p in unit["Service.ReadWritePaths"]]
    assert params["metrics_file"] is not None
    assert params["metrics_file"].parent in writable
    if params["incremental"] is not None:
        assert params["incremental"].parent == Path(STATE) / "reconcile"


@pytest.mark.parametrize("service", sorted(p.name for p in SYSTEMD.glob("*.service")))
def test_each_service_is_rated_ok_by_systemd_analyze_security(service: str, tmp_path: Path) -> None:
    """systemd's own exposure score, 0 (locked down) to 10 (none of its sandboxing):
    at most 2.0 (1.3 as shipped); dropping DynamicUser=, ProtectSystem=, the system
    call filter and the capability bounding set makes it 4.8, and this test fails."""
    analyze = require_program("systemd-analyze", "systemd")
    (tmp_path / service).write_text((SYSTEMD / service).read_text())
    done = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", f"./{service}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout.splitlines()[-1:]


def test_each_timer_starts_a_shipped_service_and_each_service_has_one() -> None:
    started = set()
    for timer in sorted(SYSTEMD.glob("*.timer")):
        unit = unit_settings(timer)
        started.update(unit.get("Timer.Unit", [timer.with_suffix(".service").name]))
        assert unit["Install.WantedBy"] == ["timers.target"]
        assert "Timer.OnCalendar" in unit
    assert started == {p.name for p in SYSTEMD.glob("*.service")}


def test_the_units_metrics_files_are_apart() -> None:
    """Two units writing one .prom file would overwrite each other's series."""
    files = [cli_params(exec_start(p)[1:])["metrics_file"] for p in SYSTEMD.glob("*.service")]
    assert len(set(files)) == len(files)


def test_the_env_example_holds_only_settings_reconcile_reads() -> None:
    example = (SYSTEMD / "reconcile.env.example").read_text()
    names = {line.split("=")[0] for line in example.splitlines() if re.match(r"[A-Z_]+=", line)}
    assert names == {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_FACE_COLLECTION"}
    assert names <= set(ENV_VARS.values())


# --- Kubernetes --------------------------------------------------------------------------


def manifest() -> dict[str, dict[str, Any]]:
    documents = [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d is not None]
    kinds = [d["kind"] for d in documents]
    assert sorted(kinds) == ["CronJob", "PersistentVolumeClaim"]
    return {d["kind"]: d for d in documents}


def the_container(cronjob: dict[str, Any]) -> dict[str, Any]:
    (container,) = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def test_the_cronjob_runs_n_shards_as_an_indexed_job_one_job_at_a_time() -> None:
    cronjob = manifest()["CronJob"]
    assert cronjob["apiVersion"] == "batch/v1"
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    job = cronjob["spec"]["jobTemplate"]["spec"]
    assert job["completionMode"] == "Indexed"
    container = the_container(cronjob)
    args = container["args"]
    shard = args[args.index("--shard") + 1]
    count = int(re.fullmatch(r"auto/(\d+)", shard).group(1))  # type: ignore[union-attr]
    assert job["completions"] == count
    assert 1 <= job["parallelism"] <= count
    # Every index Kubernetes hands out (0..N-1) is a distinct shard, together all of 1..N.
    params = cli_params(args)
    shards = []
    for index in range(count):
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("JOB_COMPLETION_INDEX", str(index))
            shards.append(Scope.from_params(params).shard)
    assert shards == [(i, count) for i in range(1, count + 1)]
    with pytest.MonkeyPatch.context() as patch, pytest.raises(ConfigError):
        patch.setenv("JOB_COMPLETION_INDEX", str(count))
        Scope.from_params(params)
    # podFailurePolicy works only with Never: a failed pod is replaced, not restarted.
    assert job["template"]["spec"]["restartPolicy"] == "Never"


def test_the_container_runs_reconcile_itself_with_no_shell() -> None:
    container = the_container(manifest()["CronJob"])
    assert container["command"] == ["reconcile"]
    args = container["args"]
    assert all(isinstance(arg, str) for arg in args), "quote numbers: args are strings"
    # No shell arithmetic, no $(VAR) expansion: the index reaches reconcile as JOB_COMPLETION_INDEX.
    assert not any("$" in arg or "`" in arg for arg in args)
    params = cli_params(args)
    assert args[0] == "repair"
    assert params["log_format"] == "json"
    assert params["yes"], "a Job has no terminal to answer the question"
    assert params["metrics_push"] == "http://pushgateway:9091"


def test_the_settings_come_from_a_secret() -> None:
    env = {e["name"]: e for e in the_container(manifest()["CronJob"])["env"]}
    secret_names = {"DATABASE_URL", "QDRANT_URL", "QDRANT_API_KEY", "QDRANT_FACE_COLLECTION"}
    assert secret_names <= set(ENV_VARS.values()), "names reconcile does not read"
    for name in secret_names:
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] == name
        assert ref["name"] == "reconcile"
    assert "value" not in env["DATABASE_URL"], "no password in the manifest"


def test_the_journals_go_to_the_persistent_volume() -> None:
    documents = manifest()
    pod = documents["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    container = the_container(documents["CronJob"])
    env = {e["name"]: e.get("value") for e in container["env"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    journals = volumes[mounts[env["XDG_STATE_HOME"]]]
    claim = documents["PersistentVolumeClaim"]
    assert journals["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    # A ReadWriteOnce volume mounts on one node: the pods must all be scheduled there.
    if claim["spec"]["accessModes"] == ["ReadWriteOnce"]:
        (term,) = pod["affinity"]["podAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        assert term["topologyKey"] == "kubernetes.io/hostname"
        labels = documents["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]
        assert term["labelSelector"]["matchLabels"].items() <= labels["labels"].items()
    # A read-only root needs a writable /tmp for the repair's spilled plan.
    if container["securityContext"].get("readOnlyRootFilesystem"):
        assert "emptyDir" in volumes[mounts["/tmp"]]


def test_auto_shard_outside_an_indexed_job_is_exit_2_in_one_line() -> None:
    done = run_cli(
        "repair",
        "--shard",
        "auto/4",
        "--yes",
        "--database-url",
        "postgresql://u:secret@127.0.0.1:1/x",
        "--qdrant-url",
        "http://127.0.0.1:1",
        env={"JOB_COMPLETION_INDEX": ""},
    )
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1
    assert "JOB_COMPLETION_INDEX" in done.stderr and "Indexed Job" in done.stderr
    assert "secret" not in done.stderr


# --- the README -----------------------------------------------------------------------


def test_the_readme_names_every_deploy_file() -> None:
    files = sorted(p for p in DEPLOY.rglob("*") if p.is_file())
    assert files
    missing = [str(p.relative_to(ROOT)) for p in files if str(p.relative_to(ROOT)) not in README]
    assert missing == [], "README.md does not mention these"
