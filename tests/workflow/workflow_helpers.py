"""Helpers for the workflow tests (imported by the test modules): a scratch working directory per
test module, Snakemake runs in it, and the job lists Snakemake schedules.

Every run uses the repository's Snakefile with ``--directory <tmp>``; the tmp folder holds its own
``config.yaml`` (the Snakefile's ``configfile:`` is relative to the working directory), so a test
config is the whole config, never merged into the embedded default.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO_ROOT / "Snakefile"
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
FREESOLV_TXT = REPO_ROOT / "data" / "freesolv" / "database.txt"

# Single-threaded numerics in every job: the suite shares 2 cores.
THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "PYTHONHASHSEED": "0",
}

_SHARD_OUTPUT_RE = re.compile(
    r"output: .*?results/shards/(\w+)/([a-z0-9]+-[0-9a-f]{8})/(s\d{5}-k\d{3})\.parquet"
)
_JOB_STATS_RE = re.compile(r"^(\w+)\s+(\d+)$", re.MULTILINE)


@dataclass
class SnakemakeRun:
    args: list[str]
    returncode: int
    output: str

    def check(self) -> SnakemakeRun:
        if self.returncode != 0:
            raise AssertionError(
                f"snakemake {' '.join(self.args)} exited {self.returncode}:\n{self.output[-6000:]}"
            )
        return self

    @property
    def nothing_to_do(self) -> bool:
        return "Nothing to be done" in self.output

    def shards(self) -> set[tuple[str, str, str]]:
        """(dataset, engine tag, shard id) of every optimize job scheduled (dry-run output)."""
        return set(_SHARD_OUTPUT_RE.findall(self.output))

    def finished(self) -> dict[str, int]:
        """Rule -> number of jobs a real run finished ('Finished jobid: N (Rule: name)'); unlike the
        job stats, which are planned before a checkpoint re-evaluates the DAG."""
        counts: dict[str, int] = {}
        for rule in re.findall(r"Finished jobid: \d+ \(Rule: (\w+)\)", self.output):
            counts[rule] = counts.get(rule, 0) + 1
        return counts

    def job_counts(self) -> dict[str, int]:
        """The 'Job stats' table of a dry-run: rule -> number of jobs."""
        if "Job stats:" not in self.output:
            return {}
        table = self.output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
        return {rule: int(n) for rule, n in _JOB_STATS_RE.findall(table) if rule != "total"}


@functools.cache
def _failing_scontrol_dir() -> str:
    """A folder holding an ``scontrol`` that fails at once.

    Every Snakemake start imports its SLURM executor plugin, which runs ``scontrol show config``
    only to word a help text. Where the SLURM client is installed but no controller answers (this
    machine once the SLURM test has stopped its cluster), that call waits 9 s, on every start of
    every local run. Local runs never use SLURM, so they get this one first on their PATH.
    """
    folder = Path(tempfile.mkdtemp(prefix="pairfactory-no-slurm-"))
    scontrol = folder / "scontrol"
    scontrol.write_text("#!/bin/sh\nexit 1\n")
    scontrol.chmod(0o755)
    return str(folder)


def run_snakemake(
    workdir: Path,
    *args: str,
    timeout: float = 300,
    env: dict[str, str] | None = None,
    slurm: bool = False,
) -> SnakemakeRun:
    """Run the repository's workflow in ``workdir``; never raises on a failed run (see .check()).
    ``slurm=True`` for a run that submits to a SLURM cluster: the real ``scontrol`` stays first."""
    argv = [str(SNAKEMAKE), "--snakefile", str(SNAKEFILE), "--directory", str(workdir), *args]
    full_env = {**os.environ, **THREAD_ENV, **(env or {})}
    if not slurm:
        full_env["PATH"] = os.pathsep.join([_failing_scontrol_dir(), full_env.get("PATH", "")])
    proc = subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=workdir
    )
    return SnakemakeRun(
        args=list(args), returncode=proc.returncode, output=proc.stdout + proc.stderr
    )


def write_config(workdir: Path, config: dict[str, Any]) -> Path:
    path = workdir / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def freesolv_subset(path: Path, n_rows: int) -> Path:
    """The FreeSolv header plus its first ``n_rows`` data rows (a real, smaller raw file)."""
    lines = FREESOLV_TXT.read_text().splitlines(keepends=True)
    header = [line for line in lines if line.startswith("#")]
    rows = [line for line in lines if line.strip() and not line.startswith("#")]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(header + rows[:n_rows]))
    return path


def smoke_evaluate(tables: list[str], models: list[str]) -> dict[str, Any]:
    """An ``evaluate`` config section that runs every fold in seconds: 2 folds of 1 epoch, small
    models, 1 CPU thread (what the workflow tests check is the plumbing, not the numbers)."""
    return {
        "tables": tables,
        "models": models,
        "splits": ["random"],
        "folds": 2,
        "epochs": 1,
        "batch_size": 16,
        "hidden_dim": 16,
        "device": "cpu",
        "threads": 1,
    }


def small_qm_config(**overrides: Any) -> dict[str, Any]:
    """FreeSolv only, QM on the water-size solutes (solute + water <= 3 heavy atoms), no
    evaluation."""
    config: dict[str, Any] = {
        "seed": 0,
        "data": {"freesolv_txt": "raw/freesolv.txt"},
        "datasets": ["freesolv"],
        "qm": {"datasets": {"freesolv": {"max_systems": None, "max_heavy_atoms": 3}}, "threads": 1},
        "samples": {"per_system": 2},
        "shards": {"systems_per_shard": 3, "samples_per_shard": 1},
        "engine": {"name": "xtb", "xtb": {"timeout_s": 60}},
        "evaluate": {"tables": []},
    }
    for section, values in overrides.items():
        if isinstance(values, dict) and isinstance(config.get(section), dict):
            config[section] = {**config[section], **values}
        else:
            config[section] = values
    return config
