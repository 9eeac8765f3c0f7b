"""The optimize stage: every sample of one shard through a QM engine, written as one shard file.

For each (system, k) of the shard: build the random complex (``pairfactory.qm.samples``), optimize
it with the engine under a per-sample wall-clock budget, and on failure retry with a fresh
arrangement (attempt seed derived from (system, k, attempt)) up to ``engine.max_attempts``; every
attempt is kept in the row. The isolated solute and solvent come from the parts cache
(``pairfactory.qm.parts``), computed once per molecule and engine settings.

A valid existing output shard (same plan content, engine tag, seed and sampling settings) is left
alone: rerunning is a no-op. Finished samples are checkpointed while the shard runs, so an
interrupted shard resumes; the shard is written atomically at the end.
"""

from __future__ import annotations

import json
import logging
import socket
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow.parquet as pq

from pairfactory import __version__
from pairfactory.errors import UserError
from pairfactory.qm.parts import PartsCache
from pairfactory.qm.plan import ShardSpec
from pairfactory.qm.records import SampleStatus
from pairfactory.qm.shards import (
    SHARD_SCHEMA,
    STATUS_OK,
    AttemptRecord,
    SampleRow,
    sample_id_for,
    validate_shard,
    write_shard,
)
from pairfactory.qm.threads import default_threads
from pairfactory.units import HARTREE_TO_KCAL_PER_MOL

if TYPE_CHECKING:
    import pandas as pd

    from pairfactory.qm.engines.base import Engine
    from pairfactory.qm.records import Complex, EngineResult
    from pairfactory.qm.settings import QmSettings

log = logging.getLogger(__name__)

# Seconds between saves of the finished samples of a running shard (resumed after an interruption).
DEFAULT_CHECKPOINT_EVERY_S = 60.0


def attempt_key(system_id: str, attempt: int) -> str:
    """The sampler key of an attempt: attempt 0 is the plain system id (so sample k of a system is
    the same complex in every run); a retry gets a key, and so a seed, of its own."""
    return system_id if attempt == 0 else f"{system_id}/attempt{attempt}"


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
    settings: QmSettings,
    out_path: str | Path,
    threads: int | None = None,
    *,
    parts_cache: str | Path,
    engine: Engine | None = None,
    progress: bool = True,
    checkpoint_every_s: float = DEFAULT_CHECKPOINT_EVERY_S,
) -> ShardSummary:
    """Optimize every (system, k) of ``spec`` and write the shard atomically to ``out_path``.

    ``parts_cache`` is the folder of isolated-molecule results (``pairfactory.qm.parts``).
    ``systems_df`` holds at least the shard's systems (columns of ``pairfactory.qm.plan``);
    ``engine`` may be passed to reuse one across shards (its tag must be ``settings.engine_tag``).
    Finished samples are saved every ``checkpoint_every_s`` seconds and when the run is
    interrupted (``checkpoint_path(out_path)``); the next run resumes from them.
    """
    from tqdm import tqdm

    out_path = Path(out_path)
    # The thread variables are the CLI's job (before the engine libraries load); here the engine
    # limits its own pool per call, so a library caller's environment is left alone.
    threads = default_threads() if threads is None else threads
    if engine is None:
        engine = settings.build_engine(threads)
    tag = settings.engine_tag
    if engine.tag != tag:
        raise UserError(f"the engine passed has tag {engine.tag}, but config.engine gives {tag}")

    sampling_key = settings.sampling_key
    existing = validate_shard(
        out_path, spec, engine_tag=tag, global_seed=settings.global_seed, sampling_key=sampling_key
    )
    if existing.valid:
        print(f"{spec.shard_id}: up to date ({out_path})")
        log.info("%s: up to date (%s)", spec.shard_id, out_path)
        return ShardSummary(
            spec.shard_id,
            str(out_path),
            existing.rows,
            existing.ok,
            existing.failed,
            existing.by_status,
            up_to_date=True,
        )
    if out_path.exists():
        log.warning(
            "%s: existing output is not usable, recomputing: %s",
            spec.shard_id,
            "; ".join(existing.reasons),
        )

    systems = _shard_systems(spec, systems_df)
    dataset = _single_dataset(systems)
    parts = PartsCache(parts_cache, engine, tag, settings.timeout_s)
    context = _RowContext(
        shard_id=spec.shard_id,
        dataset=dataset,
        engine=engine,
        engine_tag=tag,
        engine_settings_json=json.dumps(engine.settings_dict(), sort_keys=True, default=str),
        host=socket.gethostname(),
        threads=threads,
    )

    wall0, cpu0 = time.monotonic(), time.process_time()
    engine_cpu = 0.0
    checkpoint = checkpoint_path(out_path)
    done = _load_checkpoint(checkpoint, spec, tag, settings.global_seed, sampling_key)
    if done:
        log.info(
            "%s: resuming, %d of %d samples from %s",
            spec.shard_id,
            len(done),
            spec.n_samples,
            checkpoint,
        )
    records: list[dict[str, Any]] = []
    log.info(
        "%s: %d systems x %d samples with %s (%s), %d thread(s) -> %s",
        spec.shard_id,
        len(spec.system_ids),
        len(spec.sample_indices),
        tag,
        engine.method,
        threads,
        out_path,
    )
    bar = tqdm(
        total=spec.n_samples,
        desc=spec.shard_id,
        unit="sample",
        disable=not progress,
        mininterval=1.0,
    )
    last_checkpoint, new_since_checkpoint = time.monotonic(), 0
    try:
        for system_id, k in spec.expected_pairs():
            if (system_id, k) in done:
                records.append(done[(system_id, k)])
                bar.update(1)
                continue
            row, cpu = _run_sample(systems[system_id], k, context, settings, parts)
            engine_cpu += cpu
            records.append(asdict(row))
            new_since_checkpoint += 1
            bar.update(1)
            bar.set_postfix_str(f"{row.status} {row.wall_time_s:.1f}s", refresh=False)
            log.info(
                "%s k=%d: %s after %d attempt(s), %s steps, %.2f s%s",
                system_id,
                k,
                row.status,
                row.attempts,
                row.n_steps,
                row.wall_time_s,
                f" ({row.message})" if row.message else "",
            )
            if time.monotonic() - last_checkpoint >= checkpoint_every_s:
                _write_records(records, checkpoint)
                last_checkpoint, new_since_checkpoint = time.monotonic(), 0
    except BaseException:
        # Interrupted (Ctrl-C, SIGTERM from a job's time limit, a crash): keep what is done so the
        # next run resumes instead of starting over.
        if new_since_checkpoint:
            _write_records(records, checkpoint)
            log.warning(
                "%s: interrupted after %d of %d samples; saved them to %s",
                spec.shard_id,
                len(records),
                spec.n_samples,
                checkpoint,
            )
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
        sample_wall_times_s=[
            r["wall_time_s"] or 0.0 for r in records if (r["system_id"], r["k"]) not in done
        ],
    )
    log.info(
        "%s: wrote %d samples (%d ok, %s) in %.1f s; parts computed %d, loaded %d; "
        "%.1f%% of CPU in the engine",
        spec.shard_id,
        summary.n_samples,
        summary.ok,
        dict(by_status),
        summary.wall_time_s,
        summary.parts_computed,
        summary.parts_loaded,
        100 * summary.engine_cpu_fraction,
    )
    return summary


def checkpoint_path(out_path: str | Path) -> Path:
    """Where a running shard keeps its finished samples (hidden: not a shard to readers)."""
    out_path = Path(out_path)
    return out_path.with_name(f".{out_path.stem}.partial.parquet")


def _write_records(records: list[dict[str, Any]], path: Path) -> None:
    import pyarrow as pa

    write_shard(pa.Table.from_pylist(records, schema=SHARD_SCHEMA), path)


def _load_checkpoint(
    path: Path, spec: ShardSpec, tag: str, global_seed: int, sampling_key: str
) -> dict[tuple[str, int], dict[str, Any]]:
    """The samples of an interrupted earlier run that belong to this very shard, settings and
    seed."""
    if not path.is_file():
        return {}
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
            and record["sample_id"]
            == sample_id_for(record["system_id"], record["k"], global_seed, tag)
        ):
            done[pair] = record
    if len(done) < table.num_rows:
        log.info(
            "checkpoint %s: %d of its %d samples do not belong to this shard/settings; "
            "recomputing those",
            path,
            table.num_rows - len(done),
            table.num_rows,
        )
    return done


@dataclass(frozen=True)
class _RowContext:
    """What every row of one shard run shares besides the settings."""

    shard_id: str
    dataset: str
    engine: Engine
    engine_tag: str
    engine_settings_json: str
    host: str
    threads: int


def _run_sample(
    system: dict[str, Any],
    k: int,
    ctx: _RowContext,
    settings: QmSettings,
    parts: PartsCache,
) -> tuple[SampleRow, float]:
    """All attempts of one sample; returns its row and the CPU seconds spent in the engine."""
    from pairfactory.qm.samples import EmbeddingError, PlacementError, sample_complex, seed_for

    system_id = system["system_id"]
    solute, solvent = system["solute_smiles"], system["solvent_smiles"]
    started = datetime.now(UTC)
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
            complex_ = sample_complex(
                solute, solvent, key, k, settings.global_seed, settings.sampling
            )
        except (EmbeddingError, PlacementError) as err:
            history.append(
                AttemptRecord(
                    attempt,
                    seed,
                    SampleStatus.error.value,
                    f"sampling: {err}",
                    0,
                    False,
                    None,
                    time.monotonic() - t0,
                )
            )
            continue
        cpu0 = time.process_time()
        result = ctx.engine.optimize(
            complex_.atomic_numbers,
            complex_.positions_angstrom,
            complex_.total_charge,
            complex_.multiplicity,
            settings.timeout_s,
        )
        engine_cpu += time.process_time() - cpu0
        history.append(
            AttemptRecord(
                attempt,
                seed,
                result.status.value,
                result.message or None,
                result.n_steps,
                result.converged,
                result.energy_hartree,
                time.monotonic() - t0,
            )
        )
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
        n_solvent=settings.sampling.n_solvent,
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
        sampling_settings_json=settings.sampling_key,
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
    if (
        row.energy_hartree is not None
        and row.solute_energy_hartree is not None
        and row.solvent_energy_hartree is not None
    ):
        e_int = row.energy_hartree - row.solute_energy_hartree - row.solvent_energy_hartree
        row.interaction_energy_hartree = e_int
        row.interaction_energy_kcal_mol = e_int * HARTREE_TO_KCAL_PER_MOL
    row.finished_at = datetime.now(UTC)
    return row, engine_cpu


def _shard_systems(spec: ShardSpec, systems_df: pd.DataFrame) -> dict[str, dict[str, Any]]:
    indexed = {r["system_id"]: r for r in systems_df.to_dict("records")}
    missing = [sid for sid in spec.system_ids if sid not in indexed]
    if missing:
        raise UserError(
            f"shard {spec.shard_id}: {len(missing)} system(s) not in the systems table "
            f"(e.g. {missing[0]}); "
            "the pair tables changed since the plan was made: rerun the workflow so it re-plans"
        )
    systems = {sid: indexed[sid] for sid in spec.system_ids}
    for sid, solute, solvent in zip(
        spec.system_ids, spec.solute_smiles, spec.solvent_smiles, strict=False
    ):
        if (systems[sid]["solute_smiles"], systems[sid]["solvent_smiles"]) != (solute, solvent):
            raise UserError(
                f"shard {spec.shard_id}: system {sid} has other SMILES than the plan says"
            )
    return systems


def _single_dataset(systems: dict[str, dict[str, Any]]) -> str:
    names = {str(s.get("dataset")) for s in systems.values()}
    if len(names) != 1:
        raise UserError(f"a shard must hold systems of one dataset, got {sorted(names)}")
    return names.pop()
