"""The solvation stage: ΔG_solv(ALPB) per system of a dataset from the parts cache's geometries and
the real xtb program; unparametrized solvents are missing values; a rerun runs no xtb."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pairfactory.cli import main
from pairfactory.errors import UserError
from pairfactory.qm import solvation
from pairfactory.qm.descriptors import (
    ALPB_TERM_COLUMNS,
    DESCRIPTOR_COLUMNS,
    SELECTED_SOLVENTS_ATTR,
    solvation_descriptors,
)
from pairfactory.qm.settings import QmSettings


def _pair_dir(root: Path) -> Path:
    table = pd.DataFrame(
        {
            "pair_id": ["a", "b", "c"],
            "dataset": "freesolv",
            "target": "dg_hydration_kcal_mol",
            "solute_smiles": ["CCO", "CCO", "CO"],
            # water is parametrized; dodecane is not (xtb 6.5 has hexane and hexadecane)
            "solvent_smiles": ["O", "CCCCCCCCCCCC", "O"],
            "source_row": [0, 1, 2],
            "solid_state": False,
            "value": [-5.0, -3.0, -5.1],
        }
    )
    folder = root / "pairs" / "freesolv"
    folder.mkdir(parents=True)
    table.to_parquet(folder / "dg_hydration_kcal_mol.parquet", index=False)
    return root / "pairs"


def test_descriptors_per_system_with_the_real_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xtb_program: str
) -> None:
    pairs_dir = _pair_dir(tmp_path)
    settings = QmSettings.from_config({"engine": {"xtb": {"timeout_s": 60}}})
    kwargs = {"progress": False}
    table = solvation_descriptors(
        settings, pairs_dir, "freesolv", tmp_path / "parts", tmp_path / "solv", **kwargs
    )
    assert list(table.columns) == list(DESCRIPTOR_COLUMNS)
    assert len(table) == 3  # systems in = rows out
    by_pair = table.set_index(["solute_smiles", "solvent_smiles"])
    ethanol = by_pair.loc[("CCO", "O")]
    assert ethanol["status"] == "ok" and ethanol["alpb_solvent"] == "water"
    assert -12.0 < ethanol["dg_solv_alpb_kcal_mol"] < -1.0  # experiment: -5.0 kcal/mol
    assert ethanol[list(ALPB_TERM_COLUMNS)].sum() == pytest.approx(
        ethanol["dg_solv_alpb_kcal_mol"], abs=1e-6
    )
    dodecane = by_pair.loc[("CCO", "CCCCCCCCCCCC")]
    assert dodecane["status"] == "unparametrized" and pd.isna(dodecane["dg_solv_alpb_kcal_mol"])
    assert dodecane[list(ALPB_TERM_COLUMNS)].isna().all()

    calls = []
    real = solvation.run_xtb_alpb
    monkeypatch.setattr(solvation, "run_xtb_alpb", lambda *a, **k: calls.append(a) or real(*a, **k))
    again = solvation_descriptors(
        settings, pairs_dir, "freesolv", tmp_path / "parts", tmp_path / "solv", **kwargs
    )
    assert calls == []  # cached per molecule × solvent
    pd.testing.assert_frame_equal(again, table)


def test_cli_writes_the_table(tmp_path: Path, xtb_program: str) -> None:
    pairs_dir = _pair_dir(tmp_path)
    out = tmp_path / "alpb.parquet"
    args = ["solvation", "--dataset", "freesolv", "--pairs-dir", str(pairs_dir)]
    args += ["--parts-cache", str(tmp_path / "parts"), "--solvation-cache", str(tmp_path / "s")]
    assert main([*args, "--out", str(out), "--no-progress"]) == 0
    assert len(pd.read_parquet(out)) == 3


def test_only_the_systems_in_the_given_solvents(tmp_path: Path, xtb_program: str) -> None:
    """A dataset read only for its water pairs (extra training pairs) needs no other system; the
    solvents are compared as molecules, not as strings."""
    pairs_dir = _pair_dir(tmp_path)
    out = tmp_path / "alpb.parquet"
    args = ["solvation", "--dataset", "freesolv", "--pairs-dir", str(pairs_dir)]
    args += ["--parts-cache", str(tmp_path / "parts"), "--solvation-cache", str(tmp_path / "s")]
    assert main([*args, "--out", str(out), "--no-progress", "--solvent", "[H]O[H]"]) == 0
    table = pd.read_parquet(out)
    assert sorted(table["solute_smiles"]) == ["CCO", "CO"] and set(table["solvent_smiles"]) == {"O"}
    assert (table["status"] == "ok").all()
    assert table.attrs[SELECTED_SOLVENTS_ATTR] == ["[H]O[H]"]  # the table says what it holds
    assert (
        SELECTED_SOLVENTS_ATTR
        not in solvation_descriptors(
            QmSettings.from_config({}),
            pairs_dir,
            "freesolv",
            tmp_path / "parts",
            tmp_path / "s",
            progress=False,
        ).attrs
    )

    settings = QmSettings.from_config({"engine": {"xtb": {"timeout_s": 60}}})
    for solvents, needle in (
        (["O", "CCCCCC"], "no system in solvent(s) CCCCCC"),
        (["C1"], "'C1' (--solvent, or evaluate.extra_pairs.solvents in the config) is not a"),
    ):
        with pytest.raises(UserError, match=re.escape(needle)):
            solvation_descriptors(
                settings,
                pairs_dir,
                "freesolv",
                tmp_path / "parts",
                tmp_path / "s",
                progress=False,
                solvents=solvents,
            )


def test_a_missing_program_is_a_clear_error(tmp_path: Path) -> None:
    pairs_dir = _pair_dir(tmp_path)
    out = tmp_path / "alpb.parquet"
    args = ["solvation", "--dataset", "freesolv", "--pairs-dir", str(pairs_dir)]
    args += ["--parts-cache", str(tmp_path / "parts"), "--xtb", str(tmp_path / "no-xtb")]
    assert main([*args, "--out", str(out), "--no-progress"]) == 2
    assert not out.exists()


def test_pair_solvation_builds_no_engine_for_cached_molecules(
    tmp_path: Path, xtb_program: str
) -> None:
    """Prediction from cached molecules must not need the engine (an ORCA binary that only the
    training cluster has): the engine is built for the first molecule not on disk."""
    from pairfactory.qm.descriptors import PAIR_COLUMNS, PairSolvation

    settings = QmSettings.from_config({"engine": {"xtb": {"timeout_s": 60}}})
    first = PairSolvation(settings, tmp_path / "parts", tmp_path / "solv")
    table = first.table(["CCO", "CCO", "CO"], ["O", "CCCCCCCCCCCC", "O"])
    assert list(table.columns) == list(PAIR_COLUMNS)
    assert list(table["status"]) == ["ok", "unparametrized", "ok"]
    assert first.parts.computed == 2  # each solute optimized once
    assert not first.parts._memory, "a table keeps no molecule in memory after its rows"

    class Unavailable(Exception):
        pass

    def unavailable(threads: int = 1):
        raise Unavailable("the engine was built")

    again = PairSolvation(settings, tmp_path / "parts", tmp_path / "solv2")
    again.parts._engine = unavailable  # what a missing binary would do, were it built
    pd.testing.assert_frame_equal(
        again.table(["CCO", "CO"], ["O", "O"]), table.iloc[[0, 2]].reset_index(drop=True)
    )
    with pytest.raises(Unavailable):
        again.get("CCCO", "O")  # not cached: now the engine is needed


def test_pair_solvation_in_processes_gives_the_sequential_table(
    tmp_path: Path, xtb_program: str
) -> None:
    """workers=2: the same rows in input order, each solute optimized once (its solvents in one
    task), and the counters of the workers' caches come back to the caller."""
    from pairfactory.qm.descriptors import PairSolvation

    settings = QmSettings.from_config({"engine": {"xtb": {"timeout_s": 60}}})
    solutes = ["CCO", "CO", "CCO", "CC(C)=O", "CO"]
    solvents = ["O", "O", "c1ccccc1", "O", "O"]  # (CO, O) twice
    sequential = PairSolvation(settings, tmp_path / "p1", tmp_path / "s1").table(solutes, solvents)
    parallel = PairSolvation(settings, tmp_path / "p2", tmp_path / "s2", workers=2)
    table = parallel.table(solutes, solvents)
    pd.testing.assert_frame_equal(table, sequential)
    assert parallel.parts.computed == 3 and parallel.solvation.computed == 4
    assert not hasattr(parallel.parts._engine, "optimize")  # the caller itself optimized nothing
    pool = parallel._pool
    # a second chunk: its two new solutes go to the same pool, the known one is read here
    again = parallel.table(["CO", "CCC", "CCCC"], ["O", "O", "O"])
    assert parallel._pool is pool
    assert list(again["status"]) == ["ok", "ok", "ok"]
    assert parallel.parts.computed == 5 and parallel.solvation.computed == 6
    assert parallel.parts.loaded == 1 and parallel.solvation.loaded == 1  # CO, read here once
    parallel.table(["CCCCC"], ["O"])  # one new solute: the running pool, not this process
    assert parallel.parts.computed == 6 and parallel._pool is pool
    assert not hasattr(parallel.parts._engine, "optimize")
    parallel.close()
    assert parallel._pool is None
    with parallel:  # a chunk of cached molecules starts no pool
        pd.testing.assert_frame_equal(parallel.table(solutes, solvents), sequential)
        assert parallel._pool is None
        parallel.table(["C=C", "C#C"], ["O", "O"])  # after close, new work starts a new pool
        assert parallel._pool is not None
    assert parallel._pool is None  # leaving the block ends it
    assert parallel.parts.computed == 8
    with pytest.raises(UserError, match="workers must be >= 1"):
        PairSolvation(settings, tmp_path / "p3", tmp_path / "s3", workers=0)
