"""bench/sample_coverage.py: a table whose systems were sampled under several datasets counts a
pair covered once, whichever folders hold its samples, and adds up their samples."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pairfactory.qm.shards import SHARD_SCHEMA, read_shard
from real_shards import optimize_water_pairs, water_pairs


def test_a_pair_sampled_in_two_folders_is_covered_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], bench_script: Callable[[str], ModuleType]
) -> None:
    shard = optimize_water_pairs(["CCO", "CC(=O)O"], tmp_path / "optimized", tmp_path / "parts")
    rows = read_shard(shard).to_pandas()
    # folder a: ethanol's samples; folder b: ethanol's and acetic acid's
    for name, solutes in (("a", ["CCO"]), ("b", ["CCO", "CC(=O)O"])):
        folder = tmp_path / "shards" / name / "tag"
        folder.mkdir(parents=True)
        part = rows[rows["solute_smiles"].isin(solutes)]
        pq.write_table(
            pa.Table.from_pandas(part, schema=SHARD_SCHEMA, preserve_index=False),
            folder / shard.name,
        )
    (tmp_path / "pairs" / "t").mkdir(parents=True)
    water_pairs(["CCO", "CC(=O)O", "CCCl"]).to_parquet(tmp_path / "pairs" / "t" / "v.parquet")

    script = bench_script("sample_coverage")
    assert (
        script.main(
            [
                "--pairs-dir",
                str(tmp_path / "pairs"),
                "--shards-root",
                str(tmp_path / "shards"),
                "--engine-tag",
                "tag",
                "--table",
                "t/v=a+b",
                "t/v=a",
            ]
        )
        == 0
    )
    header, union, single = capsys.readouterr().out.strip().splitlines()[-3:]
    columns = header.split()
    union_row = dict(zip(columns, union.split(), strict=True))
    single_row = dict(zip(columns, single.split(), strict=True))
    assert union_row["samples_from"] == "a+b" and single_row["samples_from"] == "a"
    # ethanol is in both folders and counts once; chloroethane is in neither
    assert (union_row["pairs"], union_row["covered_pairs"]) == ("3", "2")
    # its samples in both folders are distinct samples: 2 + 2 + 2
    assert union_row["kept"] == "6"
    assert (single_row["covered_pairs"], single_row["kept"]) == ("1", "2")
