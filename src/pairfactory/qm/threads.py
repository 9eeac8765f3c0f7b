"""How many threads an optimize job uses, and telling the engine libraries before they load."""

from __future__ import annotations

import logging
import os

from pairfactory.errors import UserError

log = logging.getLogger(__name__)

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def default_threads() -> int:
    """The cores this job was given: SLURM_CPUS_PER_TASK, else the CPU affinity mask."""
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if slurm:
        try:
            value = int(slurm)
        except ValueError:
            value = 0
        if value >= 1:
            return value
        log.warning("ignoring SLURM_CPUS_PER_TASK=%r (not a positive integer)", slurm)
    return len(os.sched_getaffinity(0))


def configure_threads(threads: int) -> None:
    """Set the OpenMP/BLAS thread variables (and passive OpenMP waiting). Only effective before the
    engine libraries are imported (their pools are set up at load time); the engine also limits
    its pool per call."""
    if threads < 1:
        raise UserError(f"--threads must be >= 1, got {threads}")
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(threads)
    # OpenMP's default active wait makes idle threads spin: on a machine whose cores are shared
    # (other jobs, other shards) a 2-thread xtb shard then ran 8-14x slower than with passive
    # waiting (docs/shards.md, "Measured"). An explicit setting by the user wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
