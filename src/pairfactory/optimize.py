"""The optimize stage: every sample of one shard through a QM engine (``pairfactory optimize``).

For each (system, k) of the shard: build the random complex (``pairfactory.samples``), optimize it
with the engine under a per-sample wall-clock budget, and on failure retry with a fresh
arrangement (attempt seed derived from (system, k, attempt)) up to ``engine.max_attempts``;
every attempt is kept in the row. The isolated solute and solvent are optimized once per unique
molecule and engine settings and cached on disk (``{parts_cache}/{engine_tag}/{sha}.json``), so
the interaction energy ``E(complex) − E(solute) − n_solvent·E(solvent)`` never recomputes them.

A valid existing output shard (same plan content, engine tag and seed) is left alone: rerunning
is a no-op. The shard is written atomically at the end.

example:
  pairfactory optimize --config config.yaml --dataset freesolv --pairs-dir results/pairs \\
      --shard s00000-k000 --out results/shards/freesolv/xtb-1a2b3c4d/s00000-k000.parquet --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import signal
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from pairfactory import __version__
from pairfactory.engines.base import require_positive_int, require_timeout
from pairfactory.errors import UserError
from pairfactory.io import atomic_write_text
from pairfactory.plan import ShardSpec
from pairfactory.shards import (
    STATUS_OK,
    AttemptRecord,
    SampleRow,
    sample_id_for,
    validate_shard,
    write_shard,
)
from pairfactory.units import HARTREE_TO_KCAL_PER_MOL

if TYPE_CHECKING:
    import pandas as pd

    from pairfactory.engines.base import Engine
    from pairfactory.records import Complex, EngineResult
    from pairfactory.samples import SamplingSettings

log = logging.getLogger(__name__)

DEFAULT_MAX_ATTEMPTS = 2
DEFAULT_PARTS_CACHE = "results/parts"
# Conformers tried for an isolated molecule with rotatable bonds; the lowest optimized energy is
# kept, so the reference is not stuck in a high conformer that the complex's copy relaxes out of.
PART_CONFORMERS = 3
PART_CACHE_FORMAT = 1
# Seconds between saves of the finished samples of a running shard (resumed after an interruption).
DEFAULT_CHECKPOINT_EVERY_S = 60.0

THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


# ---------------------------------------------------------------------------------------------
# threads


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


# ---------------------------------------------------------------------------------------------
# settings


@dataclass(frozen=True)
class OptimizeSettings:
    """The config values the optimize stage reads besides the plan (see docs/shards.md)."""

    global_seed: int
    max_attempts: int
    # None: the engine's own budget (engine.{name}.timeout_s)
    timeout_s: float | None
    engine_config: dict[str, Any]
    samples_section: dict[str, Any]

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> OptimizeSettings:
        engine = dict(config.get("engine") or {})
        seed = config.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise UserError(f"seed must be an integer >= 0, got {seed!r}")
        max_attempts = engine.get("max_attempts", DEFAULT_MAX_ATTEMPTS)
        require_positive_int(max_attempts, "engine.max_attempts")
        timeout_s = engine.get("timeout_s")
        require_timeout(timeout_s, "engine.timeout_s")
        # The keys above belong to this stage, not to the engine's settings (and so not to its tag).
        engine_config = {k: v for k, v in engine.items() if k not in ("max_attempts", "timeout_s")}
        return cls(
            global_seed=seed,
            max_attempts=max_attempts,
            timeout_s=None if timeout_s is None else float(timeout_s),
            engine_config=engine_config,
            samples_section=dict(config.get("samples") or {}),
        )

    def build_engine(self, threads: int = 1) -> Engine:
        from pairfactory.engines import build_engine

        return build_engine(self.engine_config, threads)

    def engine_tag(self) -> str:
        """The tag of the configured engine settings (the shard folder name)."""
        from pairfactory.engines import engine_tag_for_config

        return engine_tag_for_config(self.engine_config)


def attempt_key(system_id: str, attempt: int) -> str:
    """The sampler key of an attempt: attempt 0 is the plain system id (so sample k of a system is
    the same complex in every run); a retry gets a key, and so a seed, of its own."""
    return system_id if attempt == 0 else f"{system_id}/attempt{attempt}"


# ---------------------------------------------------------------------------------------------
# isolated molecules ("parts")


@dataclass
class PartResult:
    """An isolated molecule optimized by the engine: the reference for the interaction energy."""

    smiles: str
    engine_tag: str
    status: str
    energy_hartree: float | None
    message: str
    n_steps: int
    n_conformers: int
    atomic_numbers: list[int] | None
    positions_angstrom: list[float] | None
    charge: int
    multiplicity: int
    wall_time_s: float
    engine_version: str
    format: int = PART_CACHE_FORMAT


class PartsCache:
    """Isolated-molecule results per engine tag, in memory and on disk (one JSON file each).

    Results that depend on the machine's speed (timeouts) are not written to disk, so a later run
    can try again; everything else is deterministic for fixed engine settings.
    """

    def __init__(self, root: str | Path, engine: Engine, engine_tag: str, timeout_s: float | None) -> None:
        self.folder = Path(root) / engine_tag
        self.engine = engine
        self.engine_tag = engine_tag
        self.timeout_s = timeout_s
        self._memory: dict[str, PartResult] = {}
        self.computed = 0
        self.loaded = 0
        self.engine_cpu_s = 0.0

    def path_for(self, smiles: str) -> Path:
        return self.folder / f"{hashlib.sha256(smiles.encode()).hexdigest()[:16]}.json"

    def get(self, smiles: str) -> PartResult:
        if smiles in self._memory:
            return self._memory[smiles]
        result = self._load(smiles)
        if result is None:
            result = self._compute(smiles)
            self.computed += 1
            if result.status != "timeout":
                self._store(result)
        else:
            self.loaded += 1
        self._memory[smiles] = result
        return result

    def _load(self, smiles: str) -> PartResult | None:
        path = self.path_for(smiles)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            result = PartResult(**data)
        except (OSError, ValueError, TypeError) as err:
            log.warning("parts cache %s is unreadable (%s); recomputing it", path, err)
            return None
        if result.smiles != smiles or result.engine_tag != self.engine_tag or result.format != PART_CACHE_FORMAT:
            log.warning("parts cache %s holds another molecule or format; recomputing it", path)
            return None
        return result

    def _store(self, result: PartResult) -> None:
        atomic_write_text(self.path_for(result.smiles), json.dumps(asdict(result), sort_keys=True))

    def _compute(self, smiles: str) -> PartResult:
        """Optimize PART_CONFORMERS conformers and keep the lowest energy among the best status."""
        from pairfactory.samples import EmbeddingError, embed_molecule, formal_charge_and_unpaired, seed_for

        start = time.monotonic()
        try:
            charge, unpaired = formal_charge_and_unpaired(smiles)
        except EmbeddingError as err:
            return self._failed(smiles, str(err), start)
        multiplicity = unpaired + 1
        n_conformers = _part_conformers(smiles)
        best: tuple[Any, ...] | None = None
        messages = []
        n_steps = 0
        for conformer in range(n_conformers):
            # Independent of the global seed: the reference of a molecule is one number per engine tag.
            seed = seed_for(0, f"part\x1f{smiles}", conformer)
            try:
                numbers, positions = embed_molecule(smiles, seed)
            except EmbeddingError as err:
                messages.append(str(err))
                continue
            cpu0 = time.process_time()
            result = self.engine.optimize(numbers, positions, charge, multiplicity, self.timeout_s)
            self.engine_cpu_s += time.process_time() - cpu0
            n_steps += result.n_steps
            if result.message:
                messages.append(f"conformer {conformer}: {result.status.value}: {result.message}")
            if result.energy_hartree is None:
                continue
            rank = (result.status.value != STATUS_OK, result.energy_hartree)
            if best is None or rank < best[0]:
                best = (rank, result, numbers)
        if best is None:
            return self._failed(smiles, "; ".join(messages) or "no conformer gave an energy", start, charge, multiplicity)
        _, result, numbers = best
        return PartResult(
            smiles=smiles,
            engine_tag=self.engine_tag,
            status=result.status.value,
            energy_hartree=float(result.energy_hartree),
            message="; ".join(messages),
            n_steps=n_steps,
            n_conformers=n_conformers,
            atomic_numbers=[int(z) for z in numbers],
            positions_angstrom=[float(x) for x in result.positions_angstrom.reshape(-1)],
            charge=charge,
            multiplicity=multiplicity,
            wall_time_s=time.monotonic() - start,
            engine_version=self.engine.version,
        )

    def _failed(self, smiles: str, message: str, start: float, charge: int = 0, multiplicity: int = 1) -> PartResult:
        return PartResult(
            smiles=smiles,
            engine_tag=self.engine_tag,
            status="error",
            energy_hartree=None,
            message=message,
            n_steps=0,
            n_conformers=PART_CONFORMERS,
            atomic_numbers=None,
            positions_angstrom=None,
            charge=charge,
            multiplicity=multiplicity,
            wall_time_s=time.monotonic() - start,
            engine_version=self.engine.version,
        )


def _part_conformers(smiles: str) -> int:
    """One conformer for rigid molecules (water, methanol, benzene), PART_CONFORMERS otherwise."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    mol = Chem.MolFromSmiles(smiles)
    if mol is None or rdMolDescriptors.CalcNumRotatableBonds(mol) == 0:
        return 1
    return PART_CONFORMERS


# ---------------------------------------------------------------------------------------------
# the stage


@dataclass
class ShardSummary:
    """What one run of the stage did (also what the benchmark reads)."""

    shard_id: str
    out_path: str
    n_samples: int
    ok: int
    failed: int
    by_status: dict[str, int]
    up_to_date: bool
    # samples taken from an interrupted earlier run's checkpoint
    resumed: int = 0
    attempts: int = 0
    wall_time_s: float = 0.0
    cpu_time_s: float = 0.0
    # process CPU time spent inside Engine.optimize (samples and parts)
    engine_cpu_s: float = 0.0
    parts_computed: int = 0
    parts_loaded: int = 0
    sample_wall_times_s: list[float] = field(default_factory=list)

    @property
    def engine_cpu_fraction(self) -> float:
        return self.engine_cpu_s / self.cpu_time_s if self.cpu_time_s > 0 else float("nan")


def run_shard(
    spec: ShardSpec,
    systems_df: pd.DataFrame,
    config: dict[str, Any],
    out_path: str | Path,
    threads: int | None = None,
    *,
    parts_cache: str | Path = DEFAULT_PARTS_CACHE,
    engine: Engine | None = None,
    progress: bool = True,
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
) -> ShardSummary:
    """Optimize every (system, k) of ``spec`` and write the shard atomically to ``out_path``.

    ``systems_df`` holds at least the shard's systems (columns of ``pairfactory.plan``);
    ``engine`` may be passed to reuse one across shards (it must match ``config["engine"]``).
    Finished samples are saved every ``checkpoint_every_s`` seconds and when the run is
    interrupted (``checkpoint_path(out_path)``); the next run resumes from them.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    settings = OptimizeSettings.from_config(config)
    # The thread variables are the CLI's job (before the engine libraries load); here the engine
    # limits its own pool per call, so a library caller's environment is left alone.
    threads = default_threads() if threads is None else threads
    if engine is None:
        engine = settings.build_engine(threads)  # cheap: engine libraries load on the first optimize
    tag = settings.engine_tag()
    if engine.tag != tag:
        raise UserError(f"the engine passed has tag {engine.tag}, but config.engine gives {tag}")

    from pairfactory.plan import sampling_key_for

    sampling_key = sampling_key_for(config)
    existing = validate_shard(out_path, spec, engine_tag=tag, global_seed=settings.global_seed,
                              sampling_key=sampling_key)
    if existing.valid:
        print(f"{spec.shard_id}: up to date ({out_path})")
        log.info("%s: up to date (%s)", spec.shard_id, out_path)
        return ShardSummary(spec.shard_id, str(out_path), existing.rows, existing.ok, existing.failed,
                            existing.by_status, up_to_date=True)
    if out_path.exists():
        log.warning("%s: existing output is not usable, recomputing: %s", spec.shard_id, "; ".join(existing.reasons))

    systems = _shard_systems(spec, systems_df)
    dataset = _single_dataset(systems)

    from pairfactory.samples import SamplingSettings

    sampling = SamplingSettings.from_config(settings.samples_section)
    parts = PartsCache(parts_cache, engine, tag, settings.timeout_s)
    context = _RowContext(
        shard_id=spec.shard_id,
        dataset=dataset,
        global_seed=settings.global_seed,
        engine=engine,
        engine_tag=tag,
        engine_settings_json=json.dumps(engine.settings_dict(), sort_keys=True, default=str),
        host=socket.gethostname(),
        threads=threads,
        sampling_key=sampling_key,
    )

    wall0, cpu0 = time.monotonic(), time.process_time()
    engine_cpu = 0.0
    checkpoint = checkpoint_path(out_path)
    done = _load_checkpoint(checkpoint, spec, tag, settings.global_seed, sampling_key)
    if done:
        log.info("%s: resuming, %d of %d samples from %s", spec.shard_id, len(done), spec.n_samples, checkpoint)
    records: list[dict[str, Any]] = []
    log.info("%s: %d systems x %d samples with %s (%s), %d thread(s) -> %s", spec.shard_id, len(spec.system_ids),
             len(spec.sample_indices), tag, engine.method, threads, out_path)
    bar = tqdm(total=spec.n_samples, desc=spec.shard_id, unit="sample", disable=not progress, mininterval=1.0)
    last_checkpoint, new_since_checkpoint = time.monotonic(), 0
    try:
        for system_id, k in spec.expected_pairs():
            if (system_id, k) in done:
                records.append(done[(system_id, k)])
                bar.update(1)
                continue
            row, cpu = _run_sample(systems[system_id], k, context, sampling, settings, parts)
            engine_cpu += cpu
            records.append(asdict(row))
            new_since_checkpoint += 1
            bar.update(1)
            bar.set_postfix_str(f"{row.status} {row.wall_time_s:.1f}s", refresh=False)
            log.info("%s k=%d: %s after %d attempt(s), %s steps, %.2f s%s", system_id, k, row.status, row.attempts,
                     row.n_steps, row.wall_time_s, f" ({row.message})" if row.message else "")
            if time.monotonic() - last_checkpoint >= checkpoint_every_s:
                _write_records(records, checkpoint)
                last_checkpoint, new_since_checkpoint = time.monotonic(), 0
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM from a job's time limit, a crash): keep what is done so the
        # next run resumes instead of starting over.
        if new_since_checkpoint:
            _write_records(records, checkpoint)
            log.warning("%s: interrupted after %d of %d samples; saved them to %s", spec.shard_id, len(records),
                        spec.n_samples, checkpoint)
        raise
    finally:
        bar.close()

    _write_records(records, out_path)
    checkpoint.unlink(missing_ok=True)
    by_status = Counter(r["status"] for r in records)
    summary = ShardSummary(
        shard_id=spec.shard_id,
        out_path=str(out_path),
        n_samples=len(records),
        ok=by_status.get(STATUS_OK, 0),
        failed=len(records) - by_status.get(STATUS_OK, 0),
        by_status=dict(by_status),
        up_to_date=False,
        resumed=len(done),
        attempts=sum(r["attempts"] for r in records),
        wall_time_s=time.monotonic() - wall0,
        cpu_time_s=time.process_time() - cpu0,
        engine_cpu_s=engine_cpu + parts.engine_cpu_s,
        parts_computed=parts.computed,
        parts_loaded=parts.loaded,
        sample_wall_times_s=[r["wall_time_s"] or 0.0 for r in records if (r["system_id"], r["k"]) not in done],
    )
    log.info("%s: wrote %d samples (%d ok, %s) in %.1f s; parts computed %d, loaded %d; %.1f%% of CPU in the engine",
             spec.shard_id, summary.n_samples, summary.ok, dict(by_status), summary.wall_time_s,
             summary.parts_computed, summary.parts_loaded, 100 * summary.engine_cpu_fraction)
    return summary


def checkpoint_path(out_path: str | Path) -> Path:
    """Where a running shard keeps its finished samples (hidden: not a shard to readers)."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.stem}.partial.parquet")


def _write_records(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa

    from pairfactory.shards import SHARD_SCHEMA

    write_shard(pa.Table.from_pylist(records, schema=SHARD_SCHEMA), path)


def _load_checkpoint(
    path: Path, spec: ShardSpec, tag: str, global_seed: int, sampling_key: str
) -> dict[tuple[str, int], dict[str, Any]]:
    """The samples of an interrupted earlier run that belong to this very shard, settings and seed."""
    if not path.is_file():
        return {}
    from pairfactory.shards import SHARD_SCHEMA

    try:
        table = pq.read_table(path)
    except Exception as err:  # a damaged checkpoint only costs recomputation
        log.warning("ignoring unreadable checkpoint %s (%s)", path, err)
        return {}
    if not table.schema.equals(SHARD_SCHEMA, check_metadata=False):
        log.warning("ignoring checkpoint %s: it has another schema", path)
        return {}
    wanted = set(spec.expected_pairs())
    done: dict[tuple[str, int], dict[str, Any]] = {}
    for record in table.to_pylist():
        pair = (record["system_id"], record["k"])
        if (
            pair in wanted
            and record["shard_id"] == spec.shard_id
            and record["engine_tag"] == tag
            and record["global_seed"] == global_seed
            and record["sampling_settings_json"] == sampling_key
            and record["sample_id"] == sample_id_for(record["system_id"], record["k"], global_seed, tag)
        ):
            done[pair] = record
    if len(done) < table.num_rows:
        log.info("checkpoint %s: %d of its %d samples do not belong to this shard/settings; recomputing those",
                 path, table.num_rows - len(done), table.num_rows)
    return done


@dataclass(frozen=True)
class _RowContext:
    shard_id: str
    dataset: str
    global_seed: int
    engine: Any
    engine_tag: str
    engine_settings_json: str
    host: str
    threads: int
    sampling_key: str


def _run_sample(
    system: dict[str, Any],
    k: int,
    ctx: _RowContext,
    sampling: SamplingSettings,
    settings: OptimizeSettings,
    parts: PartsCache,
) -> tuple[SampleRow, float]:
    """All attempts of one sample; returns its row and the CPU seconds spent in the engine."""
    from pairfactory.samples import EmbeddingError, PlacementError, sample_complex, seed_for

    system_id = system["system_id"]
    solute, solvent = system["solute_smiles"], system["solvent_smiles"]
    started = datetime.now(timezone.utc)
    history: list[AttemptRecord] = []
    engine_cpu = 0.0
    complex_: Complex | None = None
    result: EngineResult | None = None
    seed: int | None = None
    for attempt in range(settings.max_attempts):
        key = attempt_key(system_id, attempt)
        seed = seed_for(settings.global_seed, key, k)
        t0 = time.monotonic()
        complex_, result = None, None
        try:
            complex_ = sample_complex(solute, solvent, key, k, settings.global_seed, sampling)
        except (EmbeddingError, PlacementError) as err:
            history.append(AttemptRecord(attempt, seed, "error", f"sampling: {err}", 0, False, None,
                                         time.monotonic() - t0))
            continue
        cpu0 = time.process_time()
        result = ctx.engine.optimize(complex_.atomic_numbers, complex_.positions_angstrom, complex_.total_charge,
                                     complex_.multiplicity, settings.timeout_s)
        engine_cpu += time.process_time() - cpu0
        history.append(AttemptRecord(attempt, seed, result.status.value, result.message or None, result.n_steps,
                                     result.converged, result.energy_hartree, time.monotonic() - t0))
        if result.status.value == STATUS_OK:
            break

    last = history[-1]
    row = SampleRow(
        sample_id=sample_id_for(system_id, k, settings.global_seed, ctx.engine_tag),
        shard_id=ctx.shard_id,
        dataset=ctx.dataset,
        system_id=system_id,
        solute_smiles=solute,
        solvent_smiles=solvent,
        k=k,
        global_seed=settings.global_seed,
        seed=seed,
        n_solvent=sampling.n_solvent,
        n_atoms=None,
        atomic_numbers=None,
        fragment_index=None,
        initial_positions_angstrom=None,
        final_positions_angstrom=None,
        status=last.status,
        message=last.message,
        converged=bool(last.converged),
        n_steps=last.n_steps,
        energy_hartree=last.energy_hartree,
        solute_energy_hartree=None,
        solvent_energy_hartree=None,
        interaction_energy_hartree=None,
        interaction_energy_kcal_mol=None,
        solute_status=None,
        solvent_status=None,
        wall_time_s=sum(a.wall_time_s or 0.0 for a in history),
        attempts=len(history),
        attempt_history=history,
        sampling_settings_json=ctx.sampling_key,
        engine_name=ctx.engine.name,
        engine_method=ctx.engine.method,
        engine_tag=ctx.engine_tag,
        engine_settings_json=ctx.engine_settings_json,
        engine_version=ctx.engine.version,
        pairfactory_version=__version__,
        host=ctx.host,
        threads=ctx.threads,
        started_at=started,
    )
    if complex_ is not None:
        row.n_solvent = complex_.n_solvent
        row.n_atoms = complex_.n_atoms
        row.atomic_numbers = [int(z) for z in complex_.atomic_numbers]
        row.fragment_index = [int(f) for f in complex_.fragment_index]
        row.initial_positions_angstrom = [float(x) for x in complex_.positions_angstrom.reshape(-1)]
        row.arrangement = json.dumps(complex_.arrangement, sort_keys=True)
    if result is not None and result.positions_angstrom is not None:
        row.final_positions_angstrom = [float(x) for x in result.positions_angstrom.reshape(-1)]

    # The references: isolated solute and solvent (cached; computed at most once per molecule).
    solute_part = parts.get(solute)
    solvent_part = parts.get(solvent)
    row.solute_status, row.solvent_status = solute_part.status, solvent_part.status
    row.solute_energy_hartree = solute_part.energy_hartree
    n_solvent = row.n_solvent or 0
    if solvent_part.energy_hartree is not None:
        row.solvent_energy_hartree = n_solvent * solvent_part.energy_hartree
    if row.energy_hartree is not None and row.solute_energy_hartree is not None and row.solvent_energy_hartree is not None:
        e_int = row.energy_hartree - row.solute_energy_hartree - row.solvent_energy_hartree
        row.interaction_energy_hartree = e_int
        row.interaction_energy_kcal_mol = e_int * HARTREE_TO_KCAL_PER_MOL
    row.finished_at = datetime.now(timezone.utc)
    return row, engine_cpu


def _shard_systems(spec: ShardSpec, systems_df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    indexed = {r["system_id"]: r for r in systems_df.to_dict("records")}
    missing = [sid for sid in spec.system_ids if sid not in indexed]
    if missing:
        raise UserError(
            f"shard {spec.shard_id}: {len(missing)} system(s) not in the systems table (e.g. {missing[0]}); "
            "the pair tables changed since the plan was made: rerun the workflow so it re-plans"
        )
    systems = {sid: indexed[sid] for sid in spec.system_ids}
    for sid, solute, solvent in zip(spec.system_ids, spec.solute_smiles, spec.solvent_smiles, strict=False):
        if (systems[sid]["solute_smiles"], systems[sid]["solvent_smiles"]) != (solute, solvent):
            raise UserError(f"shard {spec.shard_id}: system {sid} has other SMILES than the plan says")
    return systems


def _single_dataset(systems: dict[str, dict[str, Any]]) -> str:
    names = {str(s.get("dataset")) for s in systems.values()}
    if len(names) != 1:
        raise UserError(f"a shard must hold systems of one dataset, got {sorted(names)}")
    return names.pop()


# ---------------------------------------------------------------------------------------------
# CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = (
        "example:\n"
        "  pairfactory optimize --config config.yaml --dataset freesolv --pairs-dir results/pairs \\\n"
        "      --shard s00000-k000 --out results/shards/freesolv/xtb-1a2b3c4d/s00000-k000.parquet \\\n"
        "      --threads 1 --log results/logs/optimize/freesolv/s00000-k000.log"
    )
    parser.add_argument("--config", required=True, help="config.yaml (sections seed, qm, samples, shards, engine)")
    parser.add_argument("--dataset", required=True, help="dataset name, e.g. freesolv")
    parser.add_argument("--pairs-dir", default="results/pairs", help="folder of pair tables (default: %(default)s)")
    parser.add_argument("--shard", required=True, help="shard id from the plan, e.g. s00000-k000")
    parser.add_argument("--out", required=True, help="output shard file (.parquet), written atomically")
    parser.add_argument("--parts-cache", default=DEFAULT_PARTS_CACHE,
                        help="folder of cached isolated-molecule results (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=None,
                        help="engine threads (default: SLURM_CPUS_PER_TASK, else the cores this process may use)")
    parser.add_argument("--log", default=None, help="also write the log to this file")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (log lines only)")


def run(args: argparse.Namespace) -> int:
    # Before anything imports tblite/numpy's BLAS: their thread pools are sized at load time.
    threads = default_threads() if args.threads is None else args.threads
    configure_threads(threads)
    # SLURM and Snakemake stop a job with SIGTERM: turn it into an exception so run_shard saves the
    # finished samples before the process ends.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    from pairfactory.config import load_config
    from pairfactory.plan import find_shard, plan_for_dataset

    with _log_file(args.log):
        config = load_config(args.config)
        systems, specs = plan_for_dataset(config, args.pairs_dir, args.dataset)
        spec = find_shard(specs, args.shard)
        summary = run_shard(spec, systems, config, args.out, threads, parts_cache=args.parts_cache,
                            progress=not args.no_progress)
    if not summary.up_to_date:
        print(f"{summary.shard_id}: {summary.n_samples} samples, {summary.ok} ok, by status {summary.by_status}; "
              f"wrote {summary.out_path}")
    return 0


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


@contextmanager
def _log_file(path: str | None) -> Iterator[None]:
    if not path:
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    previous = root.level
    if root.level > logging.INFO or root.level == logging.NOTSET:
        root.setLevel(logging.INFO)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
        handler.close()
