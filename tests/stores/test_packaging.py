"""A plain (non-editable) install has every subpackage: build the wheel, install it, run it."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from tests.helpers import ROOT


def run(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    # No pip cache: nothing is written outside the test's own directory.
    env = {"PATH": "/usr/bin:/bin", "PIP_NO_CACHE_DIR": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    return subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )


def test_the_wheel_installs_every_subpackage(tmp_path: Path) -> None:
    source = tmp_path / "source"
    shutil.copytree(ROOT / "reconcile", source / "reconcile")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    # The build uses this environment's setuptools (the dev extra pins one new enough),
    # so the test needs no index; the dependencies come from this environment too.
    built = run(
        sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
        "-w", tmp_path / "dist", source, cwd=tmp_path,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    (wheel,) = (tmp_path / "dist").glob("reconcile-*.whl")

    venv = tmp_path / "venv"
    made = run(sys.executable, "-m", "venv", venv, cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    installed = run(python, "-m", "pip", "install", "--no-deps", "--no-index", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr
    # The dependencies, without this checkout: a .pth line adds this environment's
    # site-packages to the path but runs none of its .pth files, so the editable
    # install of the source tree stays invisible to the new environment.
    site = run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))", cwd=tmp_path)
    deps = sysconfig.get_path("purelib")
    (Path(site.stdout.strip()) / "deps.pth").write_text(deps + "\n")

    helped = run(venv / "bin" / "reconcile", "--help", cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    assert "audit" in helped.stdout and "repair" in helped.stdout
    imported = run(
        python, "-c",
        "import reconcile, reconcile.stores, reconcile.stores.postgres, reconcile.cli.render; "
        "print(reconcile.stores.__file__)",
        cwd=tmp_path,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.strip().startswith(str(venv)), imported.stdout
