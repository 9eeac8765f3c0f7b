"""Shared fixtures: where the real datasets live, and whether their absence fails or skips."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _data_dir() -> Path:
    configured = os.environ.get("PAIRFACTORY_DATA_DIR")
    return Path(configured) if configured else REPO_ROOT.parent / "shared" / "data"


def require_or_skip(path: Path, what: str) -> Path:
    """Return ``path`` if it exists; otherwise fail under PAIRFACTORY_REQUIRE_DATA=1, else skip."""
    if path.exists():
        return path
    message = (
        f"{what} not found at {path} (set PAIRFACTORY_DATA_DIR to the folder holding the datasets)"
    )
    if os.environ.get("PAIRFACTORY_REQUIRE_DATA") == "1":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return require_or_skip(_data_dir(), "the shared data folder")


@pytest.fixture(scope="session")
def mnsol_csv(data_dir: Path) -> Path:
    return require_or_skip(data_dir / "mnsol" / "mnsol.csv", "MNSol mnsol.csv")


@pytest.fixture(scope="session")
def combisolv_csv(data_dir: Path) -> Path:
    return require_or_skip(
        data_dir / "combisolv_exp" / "CombiSolv-Exp-8780.csv", "CombiSolv-Exp-8780.csv"
    )


@pytest.fixture(scope="session")
def orca_outputs_dir(data_dir: Path) -> Path:
    return require_or_skip(data_dir / "orca_outputs", "the ORCA output fixtures")


def _debian_program(program: str, package: str, variable: str) -> str:
    """A program from Debian's package. Under ``variable``=1 (CI) a missing one is installed as
    root (like the SLURM test's cluster) or the test fails; otherwise the test is skipped."""
    import shutil
    import subprocess

    found = shutil.which(program)
    if found:
        return found
    if os.environ.get(variable) != "1":
        pytest.skip(f"{program} is not installed (apt-get install {package})")
    if shutil.which("apt-get") and os.geteuid() == 0:
        subprocess.run(["apt-get", "update", "-qq"], check=False, capture_output=True)
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package]
        subprocess.run(install, check=False, capture_output=True)
    found = shutil.which(program)
    if not found:
        pytest.fail(
            f"{variable}=1 but {program} could not be installed (apt-get install {package})"
        )
    return found


@pytest.fixture(scope="session")
def xtb_program() -> str:
    """The xtb program (for ALPB ΔG_solv), PAIRFACTORY_REQUIRE_XTB=1 in CI."""
    return _debian_program("xtb", "xtb", "PAIRFACTORY_REQUIRE_XTB")


@pytest.fixture(scope="session")
def chromium_program() -> str:
    """Headless Chromium (the HTML report's browser test), PAIRFACTORY_REQUIRE_CHROMIUM=1 in
    CI."""
    return _debian_program("chromium", "chromium", "PAIRFACTORY_REQUIRE_CHROMIUM")
