"""The shard plan: stable ids and content hashes when systems or samples are added."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pairfactory.errors import UserError
from pairfactory.qm.plan import (
    ShardSpec,
    find_shard,
    heavy_atom_count,
    load_systems,
    parse_shard_id,
    plan_for_dataset,
    plan_shards,
    select_systems,
    system_id_for,
    systems_from_pair_tables,
)
from pairfactory.qm.settings import QmSettings

# Real small molecules (canonical RDKit SMILES) of FreeSolv/MNSol kind.
SOLUTES = [
    "CO",
    "CCO",
    "CC(C)O",
    "CCCO",
    "CC(=O)O",
    "CC(C)=O",
    "CCN",
    "c1ccccc1",
    "Cc1ccccc1",
    "Oc1ccccc1",
    "ClC(Cl)Cl",
    "CCOC(C)=O",
    "CC#N",
    "C1CCCCC1",
    "CCCCCC",
    "O=C1CCCCC1",
    "Nc1ccccc1",
    "Clc1ccccc1",
    "CC(C)(C)O",
    "CCCCO",
    "CS(C)=O",
    "C1CCOC1",
    "CCOCC",
]


def pair_table(
    solutes: list[str], solvent: str = "O", target: str = "dg", start_row: int = 0
) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "dataset": "freesolv",
            "target": target,
            "solute_smiles": solutes,
            "solvent_smiles": solvent,
            "value": [float(i) for i in range(len(solutes))],
            "source_row": list(range(start_row, start_row + len(solutes))),
            "solid_state": False,
        }
    )


def by_id(specs: list[ShardSpec]) -> dict[str, ShardSpec]:
    return {s.shard_id: s for s in specs}


def test_systems_are_unique_across_targets_and_ordered_by_first_row() -> None:
    a = pair_table(["CCO", "CO", "CCN"], target="t1")
    # second target (same raw file): CO again at its row, plus a new pair with another solvent
    b = pd.DataFrame(
        {
            "dataset": "freesolv",
            "target": "t2",
            "solute_smiles": ["CO", "CCO"],
            "solvent_smiles": ["O", "CO"],
            "value": [1.0, 2.0],
            "source_row": [1, 5],
            "solid_state": [False, True],
        }
    )
    systems = systems_from_pair_tables([a, b])
    assert list(zip(systems.solute_smiles, systems.solvent_smiles)) == [
        ("CCO", "O"),
        ("CO", "O"),
        ("CCN", "O"),
        ("CCO", "CO"),
    ]
    assert systems.first_source_row.tolist() == [0, 1, 2, 5]
    assert systems.n_targets.tolist() == [1, 2, 1, 1]
    assert systems.solid_state.tolist() == [False, False, False, True]
    assert systems.system_id.tolist()[0] == system_id_for("CCO", "O")
    assert systems.system_id.str.fullmatch(r"[0-9a-f]{16}").all()
    assert systems.solute_heavy_atoms.tolist() == [3, 2, 3, 3]


def test_system_id_depends_on_order_of_solute_and_solvent() -> None:
    assert system_id_for("CO", "O") != system_id_for("O", "CO")


def test_heavy_atom_count_matches_rdkit_on_freesolv(data_dir: Path) -> None:
    from rdkit import Chem

    lines = (data_dir / "freesolv" / "database.txt").read_text().splitlines()
    smiles = [line.split("; ")[1] for line in lines if line and not line.startswith("#")]
    assert len(smiles) == 642
    for smi in smiles + ["[2H]OC", "[NH4+]", "C(=O)[O-]", "Brc1ccc(Br)cc1", "[H][H]"]:
        mol = Chem.MolFromSmiles(smi)
        assert heavy_atom_count(smi) == mol.GetNumHeavyAtoms(), smi


def test_heavy_atom_count_rejects_broken_brackets() -> None:
    with pytest.raises(UserError, match="unbalanced"):
        heavy_atom_count("C[NH4+")


def test_appending_systems_keeps_old_shards_except_last_partial_block() -> None:
    old = systems_from_pair_tables([pair_table(SOLUTES[:18])])
    new = systems_from_pair_tables([pair_table(SOLUTES)])  # 5 systems appended
    old_plan = by_id(
        plan_shards(old, samples_per_system=4, systems_per_shard=4, samples_per_shard=2)
    )
    new_plan = by_id(
        plan_shards(new, samples_per_system=4, systems_per_shard=4, samples_per_shard=2)
    )
    assert len(old_plan) == 5 * 2 and len(new_plan) == 6 * 2
    for shard_id, spec in old_plan.items():
        block, _ = parse_shard_id(shard_id)
        if block < 4:  # full blocks: unchanged
            assert new_plan[shard_id] == spec
        else:  # the old last block held 2 systems, now 4: its content changed
            assert new_plan[shard_id].content_hash != spec.content_hash
            assert new_plan[shard_id].system_ids[:2] == spec.system_ids
    assert {"s00005-k000", "s00005-k001"} <= set(new_plan)


def test_raising_samples_adds_sample_blocks_only() -> None:
    systems = systems_from_pair_tables([pair_table(SOLUTES[:10])])
    four = by_id(
        plan_shards(systems, samples_per_system=4, systems_per_shard=4, samples_per_shard=2)
    )
    six = by_id(
        plan_shards(systems, samples_per_system=6, systems_per_shard=4, samples_per_shard=2)
    )
    assert set(four) < set(six)
    assert all(six[sid] == spec for sid, spec in four.items())
    added = sorted(set(six) - set(four))
    assert added == ["s00000-k002", "s00001-k002", "s00002-k002"]
    assert all(six[sid].sample_indices == (4, 5) for sid in added)


def test_same_input_same_plan_and_row_order_does_not_matter() -> None:
    table = pair_table(SOLUTES)
    shuffled = table.sample(frac=1.0, random_state=3)
    a = plan_shards(systems_from_pair_tables([table]), 5, 3, 2)
    b = plan_shards(systems_from_pair_tables([shuffled]), 5, 3, 2)
    assert a == b
    # every (system, k) exactly once over the whole plan
    pairs = [p for spec in a for p in spec.expected_pairs()]
    assert len(pairs) == len(set(pairs)) == len(SOLUTES) * 5
    assert a[-1].sample_indices == (4,)  # last sample block is partial


def test_content_hash_covers_smiles() -> None:
    systems = systems_from_pair_tables([pair_table(SOLUTES[:4])])
    changed = systems.copy()
    changed.loc[0, "solvent_smiles"] = "CO"  # same id (not recomputed), other SMILES
    assert (
        plan_shards(systems, 2, 4, 2)[0].content_hash
        != plan_shards(changed, 2, 4, 2)[0].content_hash
    )


def test_sampling_settings_enter_the_content_hash() -> None:
    def sampling_key_for(config: dict) -> str:
        return QmSettings.from_config(config).sampling_key

    systems = systems_from_pair_tables([pair_table(SOLUTES[:4])])
    default = sampling_key_for({})
    assert (
        sampling_key_for({"samples": {"per_system": 9, "n_solvent": 1}}) == default
    )  # defaults spelled out
    two = sampling_key_for({"samples": {"n_solvent": 2}})
    assert two != default
    assert (
        plan_shards(systems, 2, 4, 2, default)[0].content_hash
        != plan_shards(systems, 2, 4, 2, two)[0].content_hash
    )
    with pytest.raises(UserError, match="n_solvnet"):
        sampling_key_for({"samples": {"n_solvnet": 2}})


def test_select_systems_is_stable_when_rows_are_appended() -> None:
    old = systems_from_pair_tables([pair_table(SOLUTES[:15])])
    new = systems_from_pair_tables([pair_table(SOLUTES)])
    a = select_systems(old, max_systems=6, max_heavy_atoms=7)
    b = select_systems(new, max_systems=6, max_heavy_atoms=7)
    assert a.system_id.tolist() == b.system_id.tolist()
    assert len(a) == 6
    assert ((a.solute_heavy_atoms + a.solvent_heavy_atoms) <= 7).all()
    # Cyclohexane (6) + water (1) = 7 passes; phenol (7) + water = 8 does not.
    assert "Oc1ccccc1" not in set(a.solute_smiles)
    assert len(select_systems(new, None, None)) == len(SOLUTES)
    with pytest.raises(UserError, match="max_heavy_atoms"):
        select_systems(new, None, 0)


def test_plan_rejects_bad_sizes_and_unknown_shards() -> None:
    systems = systems_from_pair_tables([pair_table(SOLUTES[:3])])
    with pytest.raises(UserError, match="samples_per_shard"):
        plan_shards(systems, 4, 2, 0)
    specs = plan_shards(systems, 4, 2, 2)
    assert find_shard(specs, "s00001-k001").system_ids == (systems.system_id[2],)
    with pytest.raises(UserError, match="not in the plan"):
        find_shard(specs, "s00009-k000")
    with pytest.raises(UserError, match="not of the form"):
        find_shard(specs, "shard-1")


def test_load_systems_and_plan_from_config(tmp_path: Path) -> None:
    folder = tmp_path / "pairs" / "freesolv"
    folder.mkdir(parents=True)
    pair_table(SOLUTES[:8]).to_parquet(folder / "dg.parquet")
    pair_table(SOLUTES[4:12], target="other", start_row=4).to_parquet(folder / "other.parquet")
    pd.DataFrame(
        {"dataset": ["freesolv"], "source_row": [99], "reason": ["invalid_smiles"]}
    ).to_parquet(folder / "rejects.parquet")
    systems = load_systems(tmp_path / "pairs", "freesolv")
    assert len(systems) == 12
    config = {
        "qm": {"datasets": {"freesolv": {"max_systems": 5, "max_heavy_atoms": None}}},
        "samples": {"per_system": 3},
        "shards": {"systems_per_shard": 2, "samples_per_shard": 2},
    }
    selected, specs = plan_for_dataset(
        QmSettings.from_config(config), tmp_path / "pairs", "freesolv"
    )
    assert selected.system_id.tolist() == systems.system_id.tolist()[:5]
    assert [s.shard_id for s in specs] == [f"s{b:05d}-k{k:03d}" for b in range(3) for k in range(2)]
    assert sum(s.n_samples for s in specs) == 5 * 3
    with pytest.raises(UserError, match="gets no QM"):
        QmSettings.from_config(config).subset("mnsol")
    with pytest.raises(UserError, match="pairfactory pairs"):
        load_systems(tmp_path / "pairs", "mnsol")


def test_plan_cli_writes_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import yaml

    from pairfactory.cli import main

    folder = tmp_path / "pairs" / "freesolv"
    folder.mkdir(parents=True)
    pair_table(SOLUTES).to_parquet(folder / "dg.parquet")
    config = {
        "datasets": ["freesolv"],
        "qm": {"datasets": {"freesolv": {"max_systems": 10, "max_heavy_atoms": 8}}},
        "samples": {"per_system": 3},
        "shards": {"systems_per_shard": 4, "samples_per_shard": 2},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "plan.parquet"
    args = [
        "plan",
        "--config",
        str(tmp_path / "config.yaml"),
        "--dataset",
        "freesolv",
        "--pairs-dir",
        str(tmp_path / "pairs"),
        "--out",
        str(out),
    ]
    assert main(args) == 0
    assert "10 systems selected, 30 samples in 6 shards" in capsys.readouterr().out
    plan = pd.read_parquet(out)
    assert plan.shard_id.tolist()[:2] == ["s00000-k000", "s00000-k001"]
    assert plan.n_samples.sum() == 30
    assert main(args[:-2] + ["--dataset", "mnsol"]) == 2  # no pair tables, no QM for it
