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
    reads_alpb = {"probpair_2d": {"alpb_input": True}}
    given = ProtocolOptions(extra_pairs=extra, model_hparams=reads_alpb)
    options = reproduce._with_samples(given, args, "freesolv_cgib", "probpair_2d")
    assert options.descriptors == tables["freesolv"]
    assert options.extra_descriptors == tables["combisolv"]
    # a model that reads no descriptor stays as it was (probpair: its auxiliary targets)
    for model in ("probpair", "cigin"):
        options = reproduce._with_samples(given, args, "freesolv_cgib", model)
        assert options.descriptors == tables["freesolv"] and options.extra_descriptors is None

    # extra pairs of freesolv_cgib: its descriptors are FreeSolv's, as for its own folds
    cgib = ExtraPairSettings(tmp_path / "pairs" / "freesolv_cgib" / "dg_hydration_kcal_mol.parquet")
    tables["combisolv"].rename(tmp_path / "descriptors" / "combisolv" / tag / "moved.parquet")
    (tmp_path / "shards" / "combisolv" / tag).mkdir(parents=True)
    options = reproduce._with_samples(
        ProtocolOptions(extra_pairs=cgib, model_hparams=reads_alpb),
        args,
        "combisolv",
        "probpair_2d",
    )
    assert options.descriptors is None  # combisolv has none here: nothing to read them with
    options = reproduce._with_samples(
        ProtocolOptions(extra_pairs=cgib, model_hparams=reads_alpb), args, "freesolv", "probpair_2d"
    )
    assert options.extra_descriptors == tables["freesolv"]
