"""Shard files: schema, validation reasons, atomic writes, dataset reading, XYZ export."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairfactory import fileio as pf_io
from pairfactory.errors import InputFileError, UserError
from pairfactory.qm.plan import ShardSpec, content_hash_for
from pairfactory.qm.records import SampleStatus
from pairfactory.qm.shards import (
    ATTEMPT_TYPE,
    SHARD_SCHEMA,
    STATUS_OK,
    STATUS_VALUES,
    AttemptRecord,
    SampleRow,
    export_xyz,
    open_dataset,
    read_shard,
    sample_id_for,
    shard_paths,
    table_from_rows,
    validate_shard,
    write_shard,
)

TAG = "xtb-0123abcd"
SYSTEMS = ("a" * 16, "b" * 16)
# water dimer: solute O H H, solvent O H H
WATER_DIMER_Z = [8, 1, 1, 8, 1, 1]
WATER_DIMER_XYZ = [
    0.0,
    0.0,
    0.0,
    0.96,
    0.0,
    0.0,
    -0.24,
    0.93,
    0.0,
    2.9,
    0.0,
    0.0,
    3.2,
    0.9,
    0.0,
    3.2,
    -0.5,
    0.8,
]


def make_spec(shard_id: str = "s00000-k000", ks: tuple[int, ...] = (0, 1)) -> ShardSpec:
    solutes, solvents = ("O", "CO"), ("O", "O")
    return ShardSpec(
        shard_id, SYSTEMS, ks, content_hash_for(SYSTEMS, solutes, solvents, ks), solutes, solvents
    )


def make_row(
    system_id: str,
    k: int,
    status: str = "ok",
    shard_id: str = "s00000-k000",
    seed: int = 0,
    e_int: float | None = -0.006,
) -> SampleRow:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    energy = None if status == "error" else -10.0 + 0.001 * k
    return SampleRow(
        sample_id=sample_id_for(system_id, k, seed, TAG),
        shard_id=shard_id,
        dataset="freesolv",
        system_id=system_id,
        solute_smiles="O",
        solvent_smiles="O",
        k=k,
        global_seed=seed,
        seed=1234 + k,
        n_solvent=1,
        n_atoms=6,
        atomic_numbers=WATER_DIMER_Z,
        fragment_index=[0, 0, 0, 1, 1, 1],
        initial_positions_angstrom=WATER_DIMER_XYZ,
        final_positions_angstrom=None
        if status == "error"
        else [x + 0.01 * k for x in WATER_DIMER_XYZ],
        status=status,
        message=None if status == "ok" else "failed on purpose",
        converged=status == "ok",
        n_steps=12,
        energy_hartree=energy,
        solute_energy_hartree=-5.0,
        solvent_energy_hartree=-4.994,
        interaction_energy_hartree=e_int,
        interaction_energy_kcal_mol=None if e_int is None else e_int * 627.5,
        solute_status="ok",
        solvent_status="ok",
        wall_time_s=0.5,
        attempts=1,
        attempt_history=[AttemptRecord(0, 1234 + k, status, None, 12, status == "ok", energy, 0.5)],
        arrangement='{"seed": 1}',
        sampling_settings_json='{"n_solvent":1}',
        engine_name="xtb",
        engine_method="GFN2-xTB",
        engine_tag=TAG,
        engine_settings_json="{}",
        engine_version="tblite 0.4.0",
        pairfactory_version="0.1.0",
        host="test",
        threads=1,
        started_at=now,
        finished_at=now,
    )


def full_rows(spec: ShardSpec, failing: set[tuple[str, int]] = frozenset()) -> list[SampleRow]:
    return [
        make_row(s, k, "not_converged" if (s, k) in failing else "ok", spec.shard_id)
        for s, k in spec.expected_pairs()
    ]


def test_round_trip_and_valid_shard(tmp_path: Path) -> None:
    spec = make_spec()
    path = write_shard(
        table_from_rows(full_rows(spec, {(SYSTEMS[1], 1)})), tmp_path / "s00000-k000.parquet"
    )
    table = read_shard(path)
    assert table.schema.equals(SHARD_SCHEMA, check_metadata=False)
    assert table.column("attempt_history")[0].as_py()[0]["seed"] == 1234
    result = validate_shard(path, spec, engine_tag=TAG, global_seed=0)
    assert result.valid, result.reasons
    assert (result.rows, result.ok, result.failed) == (4, 3, 1)
    assert result.by_status == {"ok": 3, "not_converged": 1}
    assert oct(path.stat().st_mode & 0o777) != oct(0o600)  # not the temp file's private mode


def test_wrong_schema_is_invalid_with_reason(tmp_path: Path) -> None:
    spec = make_spec()
    table = table_from_rows(full_rows(spec))
    path = tmp_path / "bad.parquet"
    pq.write_table(table.drop(["energy_hartree"]), path)
    result = validate_shard(path, spec)
    assert not result.valid and "missing column(s) ['energy_hartree']" in result.reasons[0]
    retyped = table.set_column(
        table.schema.get_field_index("k"), "k", table.column("k").cast(pa.int64())
    )
    pq.write_table(retyped, path)
    result = validate_shard(path, spec)
    assert not result.valid and "k is int64, expected int32" in result.reasons[0]
    with pytest.raises(ValueError, match="shard schema"):
        write_shard(retyped, tmp_path / "s00000-k000.parquet")
    path.write_bytes(b"not parquet")
    assert "unreadable" in validate_shard(path, spec).reasons[0]
    assert validate_shard(tmp_path / "nope.parquet", spec).reasons == ["file does not exist"]
    with pytest.raises(InputFileError):
        read_shard(path)


def test_wrong_counts_duplicates_and_settings_are_invalid(tmp_path: Path) -> None:
    spec = make_spec()
    rows = full_rows(spec)
    path = tmp_path / "s00000-k000.parquet"

    write_shard(table_from_rows(rows[:3]), path)
    result = validate_shard(path, spec)
    assert not result.valid
    assert any("3 rows, expected 4" in r for r in result.reasons)
    assert any("missing" in r for r in result.reasons)

    write_shard(table_from_rows(rows[:3] + [rows[0]]), path)
    reasons = validate_shard(path, spec).reasons
    assert any("duplicate sample_id" in r for r in reasons)
    assert any("more than once" in r for r in reasons)

    stray = rows[:3] + [make_row(SYSTEMS[1], 7)]
    write_shard(table_from_rows(stray), path)
    assert any("not in the plan" in r for r in validate_shard(path, spec).reasons)

    write_shard(table_from_rows(rows), path)
    assert validate_shard(path, spec).valid
    assert any(
        "engine tag" in r for r in validate_shard(path, spec, engine_tag="xtb-ffffffff").reasons
    )
    assert any("global seed" in r for r in validate_shard(path, spec, global_seed=5).reasons)
    assert any(
        "sampling settings" in r
        for r in validate_shard(path, spec, sampling_key='{"n_solvent":2}').reasons
    )
    other = ShardSpec("s00001-k000", spec.system_ids, spec.sample_indices, spec.content_hash)
    assert any("belong to shard" in r for r in validate_shard(path, other).reasons)

    tampered = rows[:3] + [make_row(SYSTEMS[1], 1)]
    tampered[3].sample_id = "f" * 16
    write_shard(table_from_rows(tampered), path)
    assert any("do not match" in r for r in validate_shard(path, spec).reasons)

    bad_status = full_rows(spec)
    bad_status[0].status = "exploded"
    write_shard(table_from_rows(bad_status), path)
    reasons = validate_shard(path, spec).reasons
    assert any("unknown status" in r for r in reasons)
    assert any("ok (3) + failed (0) != rows (4)" in r for r in reasons)


def test_failed_write_leaves_no_file_at_final_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = make_spec()
    path = tmp_path / "s00000-k000.parquet"

    def broken_replace(src: str, dst: str) -> None:
        raise OSError("disk went away before the rename")

    monkeypatch.setattr(pf_io.os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk went away"):
        write_shard(table_from_rows(full_rows(spec)), path)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []  # the temp file was removed too


_KILLED_WRITER = r"""
import sys, time
from pathlib import Path
from pairfactory.fileio import atomic_write
path, marker = Path(sys.argv[1]), Path(sys.argv[2])

def slow_write(tmp):
    with open(tmp, "wb") as handle:
        handle.write(b"PAR1" + b"\0" * 1_000_000)  # a partial file
        handle.flush()
        marker.write_text("writing")
        time.sleep(60)

atomic_write(path, slow_write)
"""


@pytest.mark.timeout(60)
def test_writer_killed_mid_write_leaves_old_or_no_file(tmp_path: Path) -> None:
    spec = make_spec()
    path = tmp_path / "s00000-k000.parquet"
    for existing in (False, True):
        if existing:
            write_shard(table_from_rows(full_rows(spec)), path)
            before = path.read_bytes()
        marker = tmp_path / f"marker-{existing}"
        proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path), str(marker)])
        try:
            deadline = time.monotonic() + 50
            while not marker.exists():
                assert proc.poll() is None, "writer exited early"
                assert time.monotonic() < deadline, "writer never started writing"
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
        finally:
            proc.wait()
        assert proc.returncode == -signal.SIGKILL
        if existing:
            assert path.read_bytes() == before and validate_shard(path, spec).valid
        else:
            assert not path.exists()
        # the half-written temp file is hidden from readers of the folder
        leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
        assert leftovers and all(name.startswith(".") for name in leftovers)
        assert shard_paths(tmp_path) == ([path] if existing else [])


def test_open_dataset_and_interaction_energy_query(tmp_path: Path) -> None:
    import pyarrow.compute as pc

    a, b = make_spec("s00000-k000", (0, 1)), make_spec("s00000-k001", (2, 3))
    write_shard(table_from_rows(full_rows(a)), tmp_path / "s00000-k000.parquet")
    rows_b = full_rows(b)
    rows_b[0].interaction_energy_hartree = -0.010
    write_shard(table_from_rows(rows_b), tmp_path / "s00000-k001.parquet")
    (tmp_path / ".s00000-k002.parquet.abc.tmp").write_bytes(b"junk")  # a running writer's temp file
    dataset = open_dataset(tmp_path)
    ok = dataset.to_table(
        columns=["system_id", "interaction_energy_hartree"], filter=pc.field("status") == "ok"
    )
    stats = (
        ok.group_by("system_id")
        .aggregate(
            [
                ("interaction_energy_hartree", "mean"),
                ("interaction_energy_hartree", "stddev"),
                ("interaction_energy_hartree", "count"),
            ]
        )
        .to_pandas()
        .set_index("system_id")
    )
    assert stats.loc[SYSTEMS[0], "interaction_energy_hartree_count"] == 4
    assert stats.loc[SYSTEMS[0], "interaction_energy_hartree_mean"] == pytest.approx(
        (-0.006 * 3 - 0.010) / 4
    )
    assert stats.loc[SYSTEMS[1], "interaction_energy_hartree_stddev"] == pytest.approx(0.0)
    with pytest.raises(UserError, match="no shard files"):
        open_dataset(tmp_path / "empty")


def test_export_xyz_round_trip(tmp_path: Path) -> None:
    from ase.io import read

    spec = make_spec()
    rows = full_rows(spec)
    rows[1] = make_row(SYSTEMS[0], 1, status="error")  # no geometry: not exported
    write_shard(table_from_rows(rows), tmp_path / "shards" / "s00000-k000.parquet")
    out = tmp_path / "pair.xyz"
    assert export_xyz(tmp_path / "shards", SYSTEMS[0], out) == 1
    frames = read(out, index=":", format="extxyz")
    assert len(frames) == 1
    frame = frames[0]
    assert frame.get_atomic_numbers().tolist() == WATER_DIMER_Z
    np.testing.assert_allclose(frame.get_positions().reshape(-1), WATER_DIMER_XYZ)
    assert frame.arrays["fragment"].tolist() == [0, 0, 0, 1, 1, 1]
    assert frame.info["energy_hartree"] == pytest.approx(-10.0)
    assert frame.get_potential_energy() == pytest.approx(-10.0 * 27.211386, rel=1e-6)
    assert frame.info["k"] == 0 and frame.info["status"] == "ok"
    with pytest.raises(UserError, match="no samples"):
        export_xyz(tmp_path / "shards", "c" * 16, out)


def test_export_xyz_cli(tmp_path: Path) -> None:
    from pairfactory.cli import main

    spec = make_spec()
    write_shard(table_from_rows(full_rows(spec)), tmp_path / "s00000-k000.parquet")
    out = tmp_path / "x.xyz"
    assert (
        main(
            [
                "export-xyz",
                "--shards-dir",
                str(tmp_path),
                "--system-id",
                SYSTEMS[1],
                "--out",
                str(out),
            ]
        )
        == 0
    )
    assert out.read_text().count("Properties=") == 2
    assert (
        main(
            [
                "export-xyz",
                "--shards-dir",
                str(tmp_path / "none"),
                "--system-id",
                "x",
                "--out",
                str(out),
            ]
        )
        == 2
    )


def test_shard_columns_and_statuses_are_defined_once() -> None:
    # the Arrow schemas are read off the row records: same names in the same order, and a column
    # that must not be null is a field that cannot be None
    for record, arrow in ((SampleRow, SHARD_SCHEMA), (AttemptRecord, ATTEMPT_TYPE)):
        columns = {column.name: column for column in arrow}
        assert [f.name for f in dataclasses.fields(record)] == list(columns)
        for f in dataclasses.fields(record):
            assert columns[f.name].nullable or "None" not in str(f.type), f.name
    assert STATUS_VALUES == tuple(status.value for status in SampleStatus)
    assert STATUS_OK == SampleStatus.ok.value
