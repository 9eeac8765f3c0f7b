"""The QM part on a real (single-node) SLURM cluster with profiles/slurm, and recovery from a shard
job cancelled while it ran.

The profile is used as shipped; only what a user changes for their cluster is overridden here
(partition, no account, small memory/runtime) plus faster status polling for a test.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest
from workflow_helpers import (
    REPO_ROOT,
    SNAKEFILE,
    SNAKEMAKE,
    THREAD_ENV,
    freesolv_subset,
    run_snakemake,
    small_qm_config,
    write_config,
)

pytestmark = pytest.mark.slurm

# 4 water-size systems x 2 samples in shards of 2 systems x 2 samples: 2 optimize jobs, each with
# 2 threads (so 2 CPUs per SLURM job)
QM_THREADS = 2
CONFIG = small_qm_config(
    shards={"systems_per_shard": 2, "samples_per_shard": 2},
    qm={
        "datasets": {"freesolv": {"max_systems": None, "max_heavy_atoms": 3}},
        "threads": QM_THREADS,
    },
)
N_SAMPLES = 8
_SUBMITTED_RE = re.compile(r"submitted with SLURM jobid (\d+)")


def _slurm_args(partition: str, workdir: Path) -> list[str]:
    return [
        "--profile",
        str(REPO_ROOT / "profiles" / "slurm"),
        "--default-resources",
        f"slurm_partition={partition}",
        "runtime=10",
        "mem_mb=500",
        "--set-resources",
        f"optimize:slurm_partition={partition}",
        f"evaluate:slurm_partition={partition}",
        "--slurm-no-account",
        "--slurm-logdir",
        str(workdir / "slurm_logs"),
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--seconds-between-status-checks",
        "1",
        "--latency-wait",
        "5",
        "--jobs",
        "4",
    ]


def _squeue(*fields: str) -> list[list[str]]:
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-o", "|".join(fields)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def slurm_run(slurm_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Run 1: cancel a running shard job (no retries) -> the run fails; run 2: completes."""
    workdir = tmp_path_factory.mktemp("slurm_run")
    freesolv_subset(workdir / "raw" / "freesolv.txt", 110)
    write_config(workdir, CONFIG)
    # curation is not what this test is about: run it locally, QM goes to SLURM
    run_snakemake(workdir, "--cores", "1", "results/pairs/freesolv").check()

    args = _slurm_args(slurm_cluster, workdir)
    argv = [
        str(SNAKEMAKE),
        "--snakefile",
        str(SNAKEFILE),
        "--directory",
        str(workdir),
        *args,
        "--retries",
        "0",
    ]
    env = {**__import__("os").environ, **THREAD_ENV}
    log_path = workdir / "run1.log"
    with log_path.open("w") as log:
        first = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        cancelled: tuple[str, str] | None = None
        deadline = time.monotonic() + 240
        while cancelled is None and first.poll() is None and time.monotonic() < deadline:
            # %k is the comment the plugin sets: rule_<name>_wildcards_<values>
            for job_id, state, comment in _squeue("%i", "%T", "%k"):
                if state == "RUNNING" and "optimize" in comment:
                    subprocess.run(["scancel", job_id], check=True)
                    cancelled = (job_id, comment)
                    break
            time.sleep(0.2)
        try:
            first.wait(timeout=300)
        except subprocess.TimeoutExpired:
            first.kill()
            raise
    after_first = {p.stem for p in _shard_files(workdir)}
    second = run_snakemake(workdir, *args, timeout=400, slurm=True)
    return {
        "shards_after_first": after_first,
        "workdir": workdir,
        "cancelled": cancelled,
        "first_returncode": first.returncode,
        "first_output": log_path.read_text(),
        "second": second,
    }


def _shard_files(workdir: Path) -> list[Path]:
    return sorted((workdir / "results" / "shards" / "freesolv").glob("*/*.parquet"))


def test_shards_are_produced_by_slurm_jobs(slurm_run: dict) -> None:
    workdir: Path = slurm_run["workdir"]
    second = slurm_run["second"].check()
    submitted = set(_SUBMITTED_RE.findall(slurm_run["first_output"])) | set(
        _SUBMITTED_RE.findall(second.output)
    )
    assert submitted, "no job was submitted to SLURM"
    shards = _shard_files(workdir)
    assert len(shards) == 2
    for shard in shards:
        log = (
            workdir
            / "results"
            / "logs"
            / "optimize"
            / "freesolv"
            / shard.parent.name
            / f"{shard.stem}.log"
        )
        first_line = log.read_text().splitlines()[0]
        match = re.search(r"SLURM job (\d+)$", first_line)
        assert match, f"{log}: {first_line!r} names no SLURM job"
        # the job id the shard ran under is one Snakemake submitted, and SLURM knows it
        assert match.group(1) in submitted
        states = {job_id: state for job_id, state in _squeue("%i", "%T")}
        assert states.get(match.group(1)) == "COMPLETED"
        # the job got as many CPUs as the rule has threads (qm.threads)
        job = subprocess.run(
            ["scontrol", "show", "job", match.group(1)], capture_output=True, text=True
        ).stdout
        assert f"NumCPUs={QM_THREADS} " in job, job
    # the collect step ran on SLURM too, and the plugin kept each job's SLURM log
    assert list((workdir / "slurm_logs").glob("rule_optimize/*/*.log"))
    assert list((workdir / "slurm_logs").glob("rule_collect/*/*.log"))


def test_cancelled_shard_job_is_redone_once_on_rerun(slurm_run: dict) -> None:
    workdir: Path = slurm_run["workdir"]
    assert slurm_run["cancelled"] is not None, (
        "no optimize job was seen running, nothing was cancelled"
    )
    cancelled_id, comment = slurm_run["cancelled"]
    assert slurm_run["first_returncode"] != 0, slurm_run["first_output"][-3000:]
    assert cancelled_id in slurm_run["first_output"]
    second = slurm_run["second"].check()
    debug = f"first run:\n{slurm_run['first_output'][-4000:]}\nsecond run:\n{second.output[-4000:]}"
    # the cancelled job left no shard behind (shards are written atomically; Snakemake removes the
    # outputs of a failed job) ...
    shard = re.search(r"(s\d{5}-k\d{3})", comment).group(1)
    assert shard not in slurm_run["shards_after_first"], debug
    # ... and the rerun re-did only what was missing, plus the collect step
    missing = {"s00000-k000", "s00001-k000"} - slurm_run["shards_after_first"]
    assert len(_SUBMITTED_RE.findall(second.output)) == len(missing) + 1, debug

    samples = pd.concat([pd.read_parquet(p) for p in _shard_files(workdir)], ignore_index=True)
    assert len(samples) == N_SAMPLES
    assert not samples.duplicated(["system_id", "k"]).any()
    (summary_path,) = (workdir / "results" / "manifest" / "freesolv").glob("*/summary.json")
    summary = json.loads(summary_path.read_text())
    assert summary["n_samples"] == N_SAMPLES
    assert summary["ok"] + summary["failed"] == N_SAMPLES
    # the cancelled shard was written by a later job
    (log,) = (workdir / "results" / "logs" / "optimize" / "freesolv").glob(f"*/{shard}.log")
    assert f"SLURM job {cancelled_id}" not in log.read_text().splitlines()[0]
