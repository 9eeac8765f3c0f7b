"""collect on a complete and on an incomplete shard set (shards made by the real xtb engine)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from pairfactory.cli import main
from pairfactory.config import load_config
from pairfactory.errors import UserError
from pairfactory.fileio import file_sha256
from pairfactory.qm.collect import collect, message_class
from pairfactory.qm.optimize import run_shard
from pairfactory.qm.plan import plan_for_dataset
from pairfactory.qm.settings import QmSettings
from pairfactory.qm.shards import read_shard


@pytest.fixture(scope="module")
def shard_set(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("collect")
    folder = root / "pairs" / "freesolv"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "pair_id": ["0" * 16, "1" * 16, "2" * 16],
            "dataset": "freesolv",
            "target": "dg_hydration_kcal_mol",
            "solute_smiles": ["O", "CO", "c1ccccc1"],
            "solvent_smiles": "O",
            "value": [-6.3, -5.1, -0.9],
            "unit": "kcal/mol",
            "source_row": [0, 1, 2],
            "solid_state": False,
        }
    ).to_parquet(folder / "dg_hydration_kcal_mol.parquet")
    raw = {
        "seed": 3,
        "datasets": ["freesolv"],
        # benzene (6) + water (1) = 7 heavy atoms: filtered out
        "qm": {"datasets": {"freesolv": {"max_heavy_atoms": 3}}},
        "samples": {"per_system": 2},
        "shards": {"systems_per_shard": 1, "samples_per_shard": 2},
        "engine": {"name": "xtb", "xtb": {"timeout_s": 60}},
    }
    config_path = root / "config.yaml"
    config_path.write_text(yaml.safe_dump(raw))
    config = load_config(config_path)
    settings = QmSettings.from_config(config)
    tag = settings.engine_tag
    shards_dir = root / "shards" / "freesolv" / tag
    systems, specs = plan_for_dataset(settings, root / "pairs", "freesolv")
    assert [s.shard_id for s in specs] == ["s00000-k000", "s00001-k000"]
    for spec in specs:
        run_shard(
            spec,
            systems,
            settings,
            shards_dir / f"{spec.shard_id}.parquet",
            1,
            parts_cache=root / "parts",
            progress=False,
        )
    return {
        "root": root,
        "config": config,
        "settings": settings,
        "config_path": config_path,
        "shards_dir": shards_dir,
        "tag": tag,
        "systems": systems,
    }


def collect_args(s: dict[str, Any], shards_dir: Path, out_dir: Path) -> list[str]:
    return [
        "collect",
        "--config",
        str(s["config_path"]),
        "--dataset",
        "freesolv",
        "--pairs-dir",
        str(s["root"] / "pairs"),
        "--shards-dir",
        str(shards_dir),
        "--out-dir",
        str(out_dir),
    ]


def test_collect_complete_set(
    shard_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_dir = tmp_path / "manifest"
    assert main(collect_args(shard_set, shard_set["shards_dir"], out_dir)) == 0
    assert "2 shards, 4 samples (2 systems)" in capsys.readouterr().out

    manifest = pd.read_parquet(out_dir / "manifest.parquet")
    assert manifest.shard_id.tolist() == ["s00000-k000", "s00001-k000"]
    assert manifest.rows.tolist() == [2, 2]
    assert (manifest.ok + manifest.failed == manifest.rows).all()
    assert (
        manifest[[f"n_{s}" for s in ("ok", "not_converged", "scf_failed", "timeout", "error")]].sum(
            axis=1
        )
        == manifest.rows
    ).all()
    for row in manifest.itertuples():
        assert row.sha256 == file_sha256(row.path)

    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["n_systems"] == 2 and summary["n_samples"] == 4
    assert summary["ok"] + summary["failed"] == 4 == sum(summary["by_status"].values())
    assert summary["engine_tag"] == shard_set["tag"]
    # per-system statistics agree with the shards themselves
    shards = pd.concat(read_shard(p).to_pandas() for p in manifest.path)
    for entry in summary["systems"]:
        values = shards[
            (shards.system_id == entry["system_id"]) & (shards.status == "ok")
        ].interaction_energy_kcal_mol
        assert entry["n_ok"] == len(values)
        if len(values):
            assert entry["interaction_energy_kcal_mol_mean"] == pytest.approx(values.mean())
        if len(values) > 1:
            assert entry["interaction_energy_kcal_mol_std"] == pytest.approx(values.std(ddof=1))
    md = (out_dir / "summary.md").read_text()
    assert "QM samples: freesolv" in md and shard_set["systems"].system_id[0] in md

    # a stale shard from an older plan is reported, not counted
    stale_dir = tmp_path / "with-stale"
    shutil.copytree(shard_set["shards_dir"], stale_dir)
    shutil.copy(stale_dir / "s00000-k000.parquet", stale_dir / "s00007-k000.parquet")
    result = collect(
        shard_set["settings"], "freesolv", shard_set["root"] / "pairs", stale_dir, tmp_path / "m2"
    )
    assert result.stale_shards == ["s00007-k000.parquet"] and result.n_samples == 4


def test_collect_incomplete_set_fails_and_writes_nothing(
    shard_set: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(shard_set["shards_dir"], partial)
    (partial / "s00001-k000.parquet").unlink()
    out_dir = tmp_path / "manifest"
    assert main(collect_args(shard_set, partial, out_dir)) == 2
    err = capsys.readouterr().err
    assert (
        "1 of 2 shards are complete" in err
        and "s00001-k000" in err
        and "pairfactory optimize" in err
    )
    assert not out_dir.exists()

    # a damaged shard is named with its reason
    data = (shard_set["shards_dir"] / "s00001-k000.parquet").read_bytes()
    (partial / "s00001-k000.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"(?s)invalid.*s00001-k000.parquet: unreadable"):
        collect(shard_set["settings"], "freesolv", shard_set["root"] / "pairs", partial, out_dir)

    # shards made with another seed do not count for this config
    other = QmSettings.from_config(dict(shard_set["config"], seed=4))
    with pytest.raises(UserError, match="global seed"):
        collect(other, "freesolv", shard_set["root"] / "pairs", shard_set["shards_dir"], out_dir)
    assert not out_dir.exists()


def test_message_class_masks_particulars() -> None:
    a = message_class(
        "error", "sampling: cannot embed SMILES 'C1CC': RDKit cannot parse or sanitize this SMILES"
    )
    b = message_class(
        "error", "sampling: cannot embed SMILES 'N1NN': RDKit cannot parse or sanitize this SMILES"
    )
    assert a == b and a.startswith("error: sampling: cannot embed")
    assert message_class(
        "not_converged", "not converged in 300 steps (fmax 0.05 eV/Å)"
    ) == message_class("not_converged", "not converged in 150 steps (fmax 0.1 eV/Å)")
    assert message_class("timeout", None) == "timeout"
