"""Shard files: the Parquet schema of optimized samples, writing, validation, reading, XYZ export.

One shard = one Parquet file ``results/shards/{dataset}/{engine_tag}/{shard_id}.parquet`` with one
row per (system, sample index k). Every quantity carries its unit in its column name. See
docs/shards.md for the column list and query examples.

``export_xyz`` writes one system's samples as extended XYZ (``pairfactory export-xyz``).
"""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.parquet as pq

from pairfactory.errors import InputFileError, UserError
from pairfactory.fileio import atomic_write, atomic_write_text

# Re-exported: the shard reader's key, by which ml matches samples to pair-table rows.
from pairfactory.qm.plan import system_id_for as system_id_for
from pairfactory.qm.records import SampleStatus

if TYPE_CHECKING:
    import pyarrow.dataset as pads

    from pairfactory.qm.plan import ShardSpec

# The status values of an optimized sample (pairfactory.qm.records.SampleStatus); "ok" is the only
# success.
STATUS_OK: str = SampleStatus.ok.value
STATUS_VALUES: tuple[str, ...] = tuple(status.value for status in SampleStatus)

SHARD_GLOB = "s[0-9][0-9][0-9][0-9][0-9]-k[0-9][0-9][0-9].parquet"

_TS = pa.timestamp("us", tz="UTC")


def _column(arrow_type: pa.DataType, *, nullable: bool = True, **default: Any) -> Any:
    """A record field that also declares its Parquet column: the dataclasses below are the one
    list of the shard's columns, and the Arrow schemas are read off them."""
    return field(metadata={"arrow_type": arrow_type, "nullable": nullable}, **default)


def _arrow_fields(record_type: type) -> list[pa.Field]:
    return [
        pa.field(f.name, f.metadata["arrow_type"], nullable=f.metadata["nullable"])
        for f in fields(record_type)
    ]


def sample_id_for(system_id: str, k: int, global_seed: int, engine_tag: str) -> str:
    """Identity of a sample: the same (system, k, seed, engine settings) always gives the same
    id."""
    text = f"{system_id}\t{k}\t{global_seed}\t{engine_tag}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class AttemptRecord:
    """One optimization attempt of a sample (kept for every attempt, failed or not)."""

    attempt: int = _column(pa.int16(), nullable=False)
    seed: int | None = _column(pa.int64())
    status: str = _column(pa.string(), nullable=False)
    message: str | None = _column(pa.string())
    n_steps: int | None = _column(pa.int32())
    converged: bool | None = _column(pa.bool_())
    energy_hartree: float | None = _column(pa.float64())
    wall_time_s: float | None = _column(pa.float64())


ATTEMPT_TYPE = pa.struct(_arrow_fields(AttemptRecord))


@dataclass
class SampleRow:
    """One row of a shard: a sample's final result plus its provenance."""

    sample_id: str = _column(pa.string(), nullable=False)
    shard_id: str = _column(pa.string(), nullable=False)
    dataset: str = _column(pa.string(), nullable=False)
    system_id: str = _column(pa.string(), nullable=False)
    solute_smiles: str = _column(pa.string(), nullable=False)
    solvent_smiles: str = _column(pa.string(), nullable=False)
    k: int = _column(pa.int32(), nullable=False)
    global_seed: int = _column(pa.int64(), nullable=False)
    # seed of the attempt whose result the row holds (the last attempt)
    seed: int | None = _column(pa.int64())
    n_solvent: int | None = _column(pa.int16())
    n_atoms: int | None = _column(pa.int32())
    atomic_numbers: list[int] | None = _column(pa.list_(pa.int8()))
    # 0 = solute, 1..n_solvent = solvent copies, one entry per atom
    fragment_index: list[int] | None = _column(pa.list_(pa.int8()))
    # flattened N*3, row-major (x0, y0, z0, x1, ...)
    initial_positions_angstrom: list[float] | None = _column(pa.list_(pa.float64()))
    final_positions_angstrom: list[float] | None = _column(pa.list_(pa.float64()))
    status: str = _column(pa.string(), nullable=False)
    message: str | None = _column(pa.string())
    converged: bool | None = _column(pa.bool_())
    n_steps: int | None = _column(pa.int32())
    energy_hartree: float | None = _column(pa.float64())
    solute_energy_hartree: float | None = _column(pa.float64())
    # sum over the n_solvent copies
    solvent_energy_hartree: float | None = _column(pa.float64())
    interaction_energy_hartree: float | None = _column(pa.float64())
    interaction_energy_kcal_mol: float | None = _column(pa.float64())
    # status of the isolated solute / solvent optimizations the interaction energy refers to
    solute_status: str | None = _column(pa.string())
    solvent_status: str | None = _column(pa.string())
    # sum over all attempts of this sample
    wall_time_s: float | None = _column(pa.float64())
    attempts: int = _column(pa.int16(), nullable=False)
    attempt_history: list[AttemptRecord] = _column(pa.list_(ATTEMPT_TYPE), default_factory=list)
    # JSON of the sampler's arrangement (placement of the solvent copies) of the last attempt
    arrangement: str | None = _column(pa.string(), default=None)
    # canonical JSON of the complex-building settings (QmSettings.sampling_key)
    sampling_settings_json: str | None = _column(pa.string(), default=None)
    engine_name: str = _column(pa.string(), nullable=False, default="")
    engine_method: str | None = _column(pa.string(), default=None)
    engine_tag: str = _column(pa.string(), nullable=False, default="")
    engine_settings_json: str | None = _column(pa.string(), default=None)
    engine_version: str | None = _column(pa.string(), default=None)
    pairfactory_version: str | None = _column(pa.string(), default=None)
    host: str | None = _column(pa.string(), default=None)
    threads: int | None = _column(pa.int16(), default=None)
    started_at: datetime | None = _column(_TS, default=None)
    finished_at: datetime | None = _column(_TS, default=None)


SHARD_SCHEMA = pa.schema(_arrow_fields(SampleRow), metadata={b"pairfactory.shard_schema": b"1"})


def table_from_rows(rows: Sequence[SampleRow]) -> pa.Table:
    """Build a shard table with exactly SHARD_SCHEMA (raises on a value of the wrong type)."""
    records = [asdict(row) for row in rows]
    return pa.Table.from_pylist(records, schema=SHARD_SCHEMA)


# ---------------------------------------------------------------------------------------------
# writing and reading


def write_shard(table: pa.Table, path: str | Path) -> Path:
    """Write ``table`` to ``path`` atomically (``pairfactory.fileio.atomic_write``).

    A reader (or Snakemake) never sees a half-written shard at ``path``: either the old file or
    the complete new one. A crash leaves at most a hidden ``.{name}.*.tmp`` file, which is removed
    when the write fails inside this process.
    """
    path = Path(path)
    if not table.schema.equals(SHARD_SCHEMA, check_metadata=False):
        raise ValueError("table does not have the shard schema; build it with table_from_rows")
    atomic_write(
        path, lambda tmp: pq.write_table(table.replace_schema_metadata(SHARD_SCHEMA.metadata), tmp)
    )
    return path


def read_shard(path: str | Path, columns: Sequence[str] | None = None) -> pa.Table:
    """One shard file (``columns``: only these, as a reader that needs a few wants)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(path, "shard file does not exist (run 'pairfactory optimize' for it)")
    try:
        return pq.read_table(path, columns=None if columns is None else list(columns))
    except Exception as err:  # pyarrow raises ArrowInvalid, OSError, ... for damaged files
        raise InputFileError(
            path, f"is not a readable Parquet shard ({err}); delete it and rerun optimize"
        ) from err


# ---------------------------------------------------------------------------------------------
# validation


@dataclass
class ShardValidation:
    """The outcome of checking one shard file; ``reasons`` says what is wrong when not ``valid``."""

    path: str
    valid: bool
    reasons: list[str]
    rows: int = 0
    ok: int = 0
    failed: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def describe(self) -> str:
        if self.valid:
            return f"{self.path}: valid ({self.rows} rows, {self.ok} ok, {self.failed} failed)"
        return f"{self.path}: invalid: " + "; ".join(self.reasons)


def validate_shard(
    path: str | Path,
    expected: ShardSpec | None = None,
    *,
    engine_tag: str | None = None,
    global_seed: int | None = None,
    sampling_key: str | None = None,
) -> ShardValidation:
    """Check a shard file: schema, statuses, unique sample ids, counts, and (with ``expected``)
    that every (system, k) of the plan is there exactly once and nothing else is. ``engine_tag``,
    ``global_seed`` and ``sampling_key`` (when given) must match every row, so a shard made with
    other settings is not taken as up to date."""
    path = Path(path)
    reasons: list[str] = []
    if not path.is_file():
        return ShardValidation(str(path), False, ["file does not exist"])
    try:
        table = pq.read_table(path)
    except Exception as err:
        return ShardValidation(str(path), False, [f"unreadable Parquet: {err}"])
    if not table.schema.equals(SHARD_SCHEMA, check_metadata=False):
        return ShardValidation(
            str(path), False, [_schema_difference(table.schema)], rows=table.num_rows
        )

    columns = table.select(
        [
            "sample_id",
            "shard_id",
            "system_id",
            "k",
            "global_seed",
            "status",
            "engine_tag",
            "sampling_settings_json",
        ]
    ).to_pydict()
    rows = table.num_rows
    statuses = Counter(columns["status"])
    unknown = sorted(set(statuses) - set(STATUS_VALUES))
    if unknown:
        reasons.append(f"unknown status values {unknown}")
    ok = statuses.get(STATUS_OK, 0)
    # failed = a known failure status; a row with an unknown status is neither, so it breaks the sum
    failed = sum(n for s, n in statuses.items() if s in STATUS_VALUES and s != STATUS_OK)

    sample_ids = columns["sample_id"]
    dupes = [sid for sid, n in Counter(sample_ids).items() if n > 1]
    if dupes:
        reasons.append(f"{len(dupes)} duplicate sample_id(s), e.g. {dupes[0]}")
    recomputed = [
        sample_id_for(s, k, g, t)
        for s, k, g, t in zip(
            columns["system_id"],
            columns["k"],
            columns["global_seed"],
            columns["engine_tag"],
            strict=True,
        )
    ]
    mismatched = sum(a != b for a, b in zip(sample_ids, recomputed, strict=True))
    if mismatched:
        reasons.append(
            f"{mismatched} sample_id(s) do not match (system_id, k, global_seed, engine_tag)"
        )
    if engine_tag is not None:
        other = sorted(set(columns["engine_tag"]) - {engine_tag})
        if other:
            reasons.append(f"made with engine tag(s) {other}, expected {engine_tag}")
    if global_seed is not None:
        other_seeds = sorted(set(columns["global_seed"]) - {global_seed})
        if other_seeds:
            reasons.append(f"made with global seed(s) {other_seeds}, expected {global_seed}")

    if sampling_key is not None and set(columns["sampling_settings_json"]) - {sampling_key}:
        reasons.append("made with other sampling settings (config samples section) than expected")

    if expected is not None:
        if rows != expected.n_samples:
            reasons.append(f"{rows} rows, expected {expected.n_samples} samples")
        shard_ids = sorted(set(columns["shard_id"]))
        if shard_ids and shard_ids != [expected.shard_id]:
            reasons.append(f"rows belong to shard(s) {shard_ids}, expected {expected.shard_id}")
        found = Counter(zip(columns["system_id"], columns["k"], strict=True))
        wanted = set(expected.expected_pairs())
        missing = [pair for pair in expected.expected_pairs() if found.get(pair, 0) == 0]
        repeated = [pair for pair, n in found.items() if n > 1]
        extra = [pair for pair in found if pair not in wanted]
        if missing:
            reasons.append(f"{len(missing)} expected (system, k) missing, e.g. {missing[0]}")
        if repeated:
            reasons.append(
                f"{len(repeated)} (system, k) present more than once, e.g. {repeated[0]}"
            )
        if extra:
            reasons.append(f"{len(extra)} (system, k) not in the plan, e.g. {extra[0]}")
    if ok + failed != rows:
        reasons.append(f"ok ({ok}) + failed ({failed}) != rows ({rows})")
    return ShardValidation(
        str(path), not reasons, reasons, rows=rows, ok=ok, failed=failed, by_status=dict(statuses)
    )


def _schema_difference(schema: pa.Schema) -> str:
    want = {f.name: f for f in SHARD_SCHEMA}
    have = {f.name: f for f in schema}
    parts = []
    missing = [n for n in want if n not in have]
    extra = [n for n in have if n not in want]
    typed = [
        f"{n} is {have[n].type}, expected {want[n].type}"
        for n in want
        if n in have and not have[n].equals(want[n])
    ]
    if missing:
        parts.append(f"missing column(s) {missing}")
    if extra:
        parts.append(f"unexpected column(s) {extra}")
    if typed:
        parts.append("; ".join(typed[:5]))
    if not parts and schema.names != SHARD_SCHEMA.names:
        parts.append("columns in a different order")
    return "schema differs from the shard schema: " + (
        "; ".join(parts) or "field attributes differ"
    )


# ---------------------------------------------------------------------------------------------
# reading many shards


def shard_paths(shards_dir: str | Path) -> list[Path]:
    """The shard files of one dataset/engine folder (temp files of running writers excluded)."""
    return sorted(Path(shards_dir).glob(SHARD_GLOB))


def open_dataset(shards_dir: str | Path) -> pads.Dataset:
    """All shards of one ``results/shards/{dataset}/{engine_tag}`` folder as one pyarrow dataset."""
    import pyarrow.dataset as pads

    paths = shard_paths(shards_dir)
    if not paths:
        raise UserError(
            f"no shard files ({SHARD_GLOB}) in {shards_dir}; run the optimize stage first"
        )
    return pads.dataset([str(p) for p in paths], schema=SHARD_SCHEMA, format="parquet")


# ---------------------------------------------------------------------------------------------
# XYZ export


def export_xyz(
    shards_dir: str | Path, system_id: str, out_path: str | Path, ok_only: bool = False
) -> int:
    """Write every sample of ``system_id`` that has an optimized geometry as extended XYZ frames.

    Per frame: species, positions (Å) and a per-atom ``fragment`` array (0 = solute); the info
    line holds the energy (eV, ASE's convention, also as ``energy_hartree``), the interaction
    energy, status, k and the identities. Returns the number of frames written.
    """
    import numpy as np
    import pyarrow.compute as pc
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from pairfactory.units import HARTREE_TO_EV

    dataset = open_dataset(shards_dir)
    rows = dataset.to_table(filter=pc.field("system_id") == system_id).to_pylist()
    if not rows:
        raise UserError(
            f"system {system_id} has no samples in {shards_dir}; list the ids with "
            f'python -c "import pyarrow.dataset as d; '
            f"print(d.dataset('{shards_dir}').to_table(columns=['system_id']))\""
        )
    rows.sort(key=lambda r: r["k"])
    frames = []
    for row in rows:
        if row["final_positions_angstrom"] is None or (ok_only and row["status"] != STATUS_OK):
            continue
        positions = np.asarray(row["final_positions_angstrom"], dtype=float).reshape(-1, 3)
        atoms = Atoms(numbers=row["atomic_numbers"], positions=positions)
        atoms.arrays["fragment"] = np.asarray(row["fragment_index"], dtype=int)
        for key in (
            "sample_id",
            "system_id",
            "k",
            "status",
            "solute_smiles",
            "solvent_smiles",
            "engine_tag",
            "n_steps",
        ):
            if row[key] is not None:
                atoms.info[key] = row[key]
        for key in ("energy_hartree", "interaction_energy_kcal_mol"):
            if row[key] is not None:
                atoms.info[key] = float(row[key])
        if row["energy_hartree"] is not None:
            atoms.calc = SinglePointCalculator(atoms, energy=row["energy_hartree"] * HARTREE_TO_EV)
        frames.append(atoms)
    if not frames:
        raise UserError(
            f"system {system_id} has {len(rows)} samples but none with an optimized geometry "
            "to export"
        )
    buffer = io.StringIO()
    write(buffer, frames, format="extxyz")
    atomic_write_text(out_path, buffer.getvalue())
    return len(frames)
