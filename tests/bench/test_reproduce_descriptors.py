"""bench/reproduce.py --descriptors-root: each dataset's descriptor table, and with --extra-pairs
the extra table's dataset's table from the same root."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from pairfactory.ml.evaluate import ProtocolOptions
from pairfactory.ml.extra_pairs import ExtraPairSettings


def test_the_extra_datasets_descriptor_table_is_found_beside_the_folds_own(
    tmp_path: Path, bench_script: Callable[[str], ModuleType]
) -> None:
    reproduce = bench_script("reproduce")
    tag = "xtb-0123abcd"
    (tmp_path / "shards" / "freesolv" / tag).mkdir(parents=True)
    tables = {}
    for dataset in ("freesolv", "combisolv"):
        tables[dataset] = tmp_path / "descriptors" / dataset / tag / "alpb.parquet"
        tables[dataset].parent.mkdir(parents=True)
        tables[dataset].write_bytes(b"")
    args = argparse.Namespace(
        shards_root=str(tmp_path / "shards"),
        engine_tag=tag,
        descriptors_root=str(tmp_path / "descriptors"),
    )
    extra = ExtraPairSettings(tmp_path / "pairs" / "combisolv" / "dg_solv_kcal_mol.parquet")
    options = reproduce._with_samples(ProtocolOptions(extra_pairs=extra), args, "freesolv_cgib")
    assert options.descriptors == tables["freesolv"]
    assert options.extra_descriptors == tables["combisolv"]

    tables["combisolv"].unlink()  # none there: the extra pairs go without (the fold will say so)
    options = reproduce._with_samples(ProtocolOptions(extra_pairs=extra), args, "freesolv_cgib")
    assert options.descriptors == tables["freesolv"] and options.extra_descriptors is None
