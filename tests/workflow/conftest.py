"""Fixtures of the workflow tests; the helpers live in workflow_helpers.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from workflow_helpers import REPO_ROOT


@pytest.fixture(autouse=True)
def _single_thread_torch() -> None:
    # The house rule: torch at one thread in tests (only if something imported it already).
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(1)


def _slurm_unavailable(message: str) -> None:
    """Fail under PAIRFACTORY_REQUIRE_SLURM=1 (CI), skip otherwise."""
    if os.environ.get("PAIRFACTORY_REQUIRE_SLURM") == "1":
        pytest.fail(f"SLURM required (PAIRFACTORY_REQUIRE_SLURM=1) but unavailable: {message}")
    pytest.skip(f"SLURM unavailable: {message}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[str]:
    """A running single-node SLURM cluster (scripts/slurm_cluster.sh, which installs slurm-wlm and
    munge when missing); yields its partition and stops what it started at the end."""
    script = REPO_ROOT / "scripts" / "slurm_cluster.sh"
    if os.geteuid() != 0:
        _slurm_unavailable("the test cluster needs root (apt-get, munged, slurmctld)")
    already_up = (
        subprocess.run([str(script), "status"], capture_output=True, text=True).returncode == 0
    )
    if not already_up:
        try:
            proc = subprocess.run(
                [str(script), "start"], capture_output=True, text=True, timeout=900
            )
        except subprocess.TimeoutExpired:
            _slurm_unavailable("scripts/slurm_cluster.sh start timed out")
        if proc.returncode != 0:
            _slurm_unavailable(
                "scripts/slurm_cluster.sh start failed:\n"
                f"{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
            )
    try:
        yield os.environ.get("PAIRFACTORY_SLURM_PARTITION", "debug")
    finally:
        if not already_up:
            subprocess.run([str(script), "stop"], capture_output=True, text=True, timeout=120)
