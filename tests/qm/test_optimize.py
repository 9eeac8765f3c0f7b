"""The optimize stage with the real GFN2-xTB engine on tiny systems (water·water,
methanol·water)."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pairfactory.errors import UserError
from pairfactory.qm.optimize import ShardSummary, attempt_key, run_shard
from pairfactory.qm.plan import ShardSpec, plan_shards, systems_from_pair_tables
from pairfactory.qm.settings import QmSettings
from pairfactory.qm.shards import read_shard, validate_shard
from pairfactory.qm.threads import default_threads

SEED = 7


def tiny_systems(solutes: list[str] | None = None) -> pd.DataFrame:
    solutes = solutes or ["O", "CO"]
    table = pd.DataFrame(
        {
            "dataset": "freesolv",
            "solute_smiles": solutes,
            "solvent_smiles": "O",
            "source_row": range(len(solutes)),
            "solid_state": False,
        }
    )
    return systems_from_pair_tables([table])


def xtb_config(**xtb: Any) -> dict[str, Any]:
    return {
        "seed": SEED,
        "engine": {"name": "xtb", "max_attempts": 2, "xtb": {"timeout_s": 60, **xtb}},
    }


class CountingEngine:
    """Delegates to a real engine and records the size of every geometry it was asked to
    optimize."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def tag(self) -> str:
        return self.inner.tag

    def optimize(self, numbers: Any, positions: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(len(numbers))
        return self.inner.optimize(numbers, positions, *args, **kwargs)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """2 systems × 2 samples through real xtb, with a counting engine (shared by several tests)."""
    root = tmp_path_factory.mktemp("optimize")
    systems = tiny_systems()
    spec = plan_shards(systems, samples_per_system=2, systems_per_shard=2, samples_per_shard=2)[0]
    config = xtb_config()
    settings = QmSettings.from_config(config)
    engine = CountingEngine(settings.build_engine(1))
    out = root / "shards" / f"{spec.shard_id}.parquet"
    summary = run_shard(
        spec, systems, settings, out, 1, parts_cache=root / "parts", engine=engine, progress=False
    )
    return {
        "root": root,
        "systems": systems,
        "spec": spec,
        "config": config,
        "settings": settings,
        "engine": engine,
        "out": out,
        "summary": summary,
    }


def test_statuses_and_interaction_energy_from_parts(first_run: dict[str, Any]) -> None:
    summary: ShardSummary = first_run["summary"]
    spec: ShardSpec = first_run["spec"]
    assert (summary.n_samples, summary.ok, summary.failed) == (4, 4, 0)
    assert validate_shard(first_run["out"], spec).valid
    table = read_shard(first_run["out"]).to_pandas()
    assert list(zip(table.system_id, table.k)) == spec.expected_pairs()
    assert set(table.status) == {"ok"} and table.converged.all()
    assert (table.solute_status == "ok").all() and (table.solvent_status == "ok").all()

    tag = table.engine_tag.iloc[0]
    parts = {}
    for path in (first_run["root"] / "parts" / tag).glob("*.json"):
        data = json.loads(path.read_text())
        parts[data["smiles"]] = data["energy_hartree"]
    assert set(parts) == {"O", "CO"}
    for row in table.itertuples():
        assert row.solute_energy_hartree == parts[row.solute_smiles]
        assert row.solvent_energy_hartree == row.n_solvent * parts["O"]
        expected = row.energy_hartree - parts[row.solute_smiles] - row.n_solvent * parts["O"]
        assert row.interaction_energy_hartree == pytest.approx(expected, abs=1e-12)
        assert row.interaction_energy_kcal_mol == pytest.approx(expected * 627.5094740631)
        # a bound complex of two small polar molecules: a few kcal/mol of attraction
        assert -15.0 < row.interaction_energy_kcal_mol < 0.5
        assert (
            len(row.final_positions_angstrom)
            == 3 * row.n_atoms
            == len(row.initial_positions_angstrom)
        )
        assert row.attempts == 1 and len(row.attempt_history) == 1
        assert row.seed == json.loads(row.arrangement)["seed"]
    # GFN2-xTB water: about -5.07 Eh
    assert parts["O"] == pytest.approx(-5.07, abs=0.02)


def test_parts_are_computed_once_per_molecule_and_cached_on_disk(first_run: dict[str, Any]) -> None:
    engine: CountingEngine = first_run["engine"]
    # 4 complexes (6 and 9 atoms) + isolated water (3) + isolated methanol (6): each part once
    assert sorted(engine.calls) == sorted([6, 6, 9, 9, 3, 6])
    assert (first_run["summary"].parts_computed, first_run["summary"].parts_loaded) == (2, 0)

    # a new shard (next sample block) with the same cache: parts come from disk, the engine sees
    # complexes only
    systems = first_run["systems"]
    spec = plan_shards(systems, samples_per_system=3, systems_per_shard=2, samples_per_shard=2)[1]
    assert spec.sample_indices == (2,)
    engine.calls.clear()
    summary = run_shard(
        spec,
        systems,
        first_run["settings"],
        first_run["root"] / "shards" / f"{spec.shard_id}.parquet",
        1,
        parts_cache=first_run["root"] / "parts",
        engine=engine,
        progress=False,
    )
    assert sorted(engine.calls) == [6, 9]
    assert (summary.parts_computed, summary.parts_loaded) == (0, 2)
    assert 0.0 < summary.engine_cpu_s <= summary.cpu_time_s * 1.01


def test_same_config_gives_identical_results(first_run: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "again.parquet"
    run_shard(
        first_run["spec"],
        first_run["systems"],
        first_run["settings"],
        out,
        1,
        parts_cache=tmp_path / "fresh-parts",
        progress=False,
    )
    a = read_shard(first_run["out"]).to_pandas()
    b = read_shard(out).to_pandas()
    for column in (
        "sample_id",
        "seed",
        "status",
        "n_steps",
        "energy_hartree",
        "interaction_energy_hartree",
        "solute_energy_hartree",
        "solvent_energy_hartree",
    ):
        assert a[column].tolist() == b[column].tolist(), column
    for x, y in zip(a.final_positions_angstrom, b.final_positions_angstrom, strict=True):
        np.testing.assert_array_equal(x, y)


def test_rerun_is_a_no_op_and_a_broken_shard_is_recomputed(
    first_run: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    class ExplodingEngine(CountingEngine):
        def optimize(self, *args: Any, **kwargs: Any) -> Any:
            raise AssertionError("a valid shard must not be recomputed")

    out: Path = first_run["out"]
    before = out.stat().st_mtime_ns
    summary = run_shard(
        first_run["spec"],
        first_run["systems"],
        first_run["settings"],
        out,
        1,
        parts_cache=first_run["root"] / "parts",
        engine=ExplodingEngine(first_run["engine"].inner),
        progress=False,
    )
    assert summary.up_to_date and summary.ok == 4
    assert out.stat().st_mtime_ns == before
    assert "up to date" in capsys.readouterr().out

    # other seed: not up to date
    other = QmSettings.from_config(dict(first_run["config"], seed=SEED + 1))
    with pytest.raises(AssertionError, match="must not be recomputed"):
        run_shard(
            first_run["spec"],
            first_run["systems"],
            other,
            out,
            1,
            parts_cache=first_run["root"] / "parts",
            engine=ExplodingEngine(first_run["engine"].inner),
            progress=False,
        )
    assert out.stat().st_mtime_ns == before  # the failed run left the old shard alone
    # other complex-building settings: not up to date either
    two_waters = QmSettings.from_config(dict(first_run["config"], samples={"n_solvent": 2}))
    with pytest.raises(AssertionError, match="must not be recomputed"):
        run_shard(
            first_run["spec"],
            first_run["systems"],
            two_waters,
            out,
            1,
            parts_cache=first_run["root"] / "parts",
            engine=ExplodingEngine(first_run["engine"].inner),
            progress=False,
        )

    # a truncated shard is recomputed (here by the real engine, parts from the cache)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(out.read_bytes()[:100])
    summary = run_shard(
        first_run["spec"],
        first_run["systems"],
        first_run["settings"],
        broken,
        1,
        parts_cache=first_run["root"] / "parts",
        progress=False,
    )
    assert not summary.up_to_date and summary.n_samples == 4
    assert validate_shard(broken, first_run["spec"]).valid


def test_failed_sample_is_retried_and_every_attempt_kept(tmp_path: Path) -> None:
    systems = tiny_systems(["CO"])
    spec = plan_shards(systems, 1, 1, 1)[0]
    config = xtb_config(max_steps=1)  # one BFGS step never converges
    summary = run_shard(
        spec,
        systems,
        QmSettings.from_config(config),
        tmp_path / "s.parquet",
        1,
        parts_cache=tmp_path / "parts",
        progress=False,
    )
    assert summary.by_status == {"not_converged": 1} and summary.attempts == 2
    row = pq.read_table(tmp_path / "s.parquet").to_pylist()[0]
    assert row["status"] == "not_converged" and row["attempts"] == 2
    history = row["attempt_history"]
    assert [a["attempt"] for a in history] == [0, 1]
    assert all(a["status"] == "not_converged" and a["n_steps"] == 1 for a in history)
    assert history[0]["seed"] != history[1]["seed"]
    assert row["seed"] == history[1]["seed"]  # the row holds the last attempt
    assert row["message"] and "not converged" in row["message"]
    # the last geometry and energy of an unconverged run are kept (a noisy sample)
    assert row["energy_hartree"] is not None and row["final_positions_angstrom"] is not None
    assert row["solute_status"] == "not_converged"


def test_embedding_failure_is_recorded_not_raised(tmp_path: Path) -> None:
    systems = tiny_systems(["C1CC"])  # an unclosed ring: RDKit cannot parse it
    spec = plan_shards(systems, 1, 1, 1)[0]
    summary = run_shard(
        spec,
        systems,
        QmSettings.from_config(xtb_config()),
        tmp_path / "s.parquet",
        1,
        parts_cache=tmp_path / "parts",
        progress=False,
    )
    assert summary.by_status == {"error": 1}
    row = pq.read_table(tmp_path / "s.parquet").to_pylist()[0]
    assert row["attempts"] == 2 and "cannot embed" in row["message"]
    assert row["atomic_numbers"] is None and row["interaction_energy_hartree"] is None
    assert row["solute_status"] == "error" and row["solvent_status"] == "ok"
    assert validate_shard(tmp_path / "s.parquet", spec).valid


def test_attempt_keys_and_settings() -> None:
    assert attempt_key("abc", 0) == "abc" and attempt_key("abc", 1) != attempt_key("abc", 2)
    settings = QmSettings.from_config(
        {"engine": {"name": "xtb", "max_attempts": 3, "timeout_s": 5}}
    )
    assert (settings.max_attempts, settings.timeout_s, settings.global_seed) == (3, 5.0, 0)
    assert "max_attempts" not in asdict(settings.engine_settings)
    # stage-only keys do not change the engine tag
    assert settings.engine_tag == QmSettings.from_config({}).engine_tag
    with pytest.raises(UserError, match="max_attempts"):
        QmSettings.from_config({"engine": {"max_attempts": 0}})
    with pytest.raises(UserError, match="seed"):
        QmSettings.from_config({"seed": -1})


def test_default_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert default_threads() == 3
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert default_threads() == len(os.sched_getaffinity(0))


def test_configure_threads_sets_pools_and_keeps_an_explicit_wait_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    from pairfactory.qm.threads import configure_threads

    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_WAIT_POLICY"):
        monkeypatch.delenv(name, raising=False)
    configure_threads(3)
    assert os.environ["OMP_NUM_THREADS"] == os.environ["OPENBLAS_NUM_THREADS"] == "3"
    assert os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    configure_threads(1)
    assert os.environ["OMP_WAIT_POLICY"] == "ACTIVE" and os.environ["MKL_NUM_THREADS"] == "1"
    with pytest.raises(UserError, match="threads"):
        configure_threads(0)


def test_unknown_system_is_a_user_error(tmp_path: Path) -> None:
    systems = tiny_systems(["CO"])
    spec = plan_shards(tiny_systems(["CCO"]), 1, 1, 1)[0]
    with pytest.raises(UserError, match="not in the systems table"):
        run_shard(
            spec,
            systems,
            QmSettings.from_config(xtb_config()),
            tmp_path / "s.parquet",
            1,
            parts_cache=tmp_path / "p",
            progress=False,
        )


def test_optimize_cli(tmp_path: Path) -> None:
    import yaml

    from pairfactory.cli import main

    folder = tmp_path / "pairs" / "freesolv"
    folder.mkdir(parents=True)
    pd.DataFrame(
        {
            "pair_id": ["0" * 16],
            "dataset": ["freesolv"],
            "target": ["dg_hydration_kcal_mol"],
            "solute_smiles": ["O"],
            "solvent_smiles": ["O"],
            "value": [-6.3],
            "unit": ["kcal/mol"],
            "source_row": [0],
            "solid_state": [False],
        }
    ).to_parquet(folder / "dg_hydration_kcal_mol.parquet")
    config = {
        "seed": 1,
        "datasets": ["freesolv"],
        "qm": {"datasets": {"freesolv": {"max_systems": 1}}},
        "samples": {"per_system": 1},
        "shards": {"systems_per_shard": 1, "samples_per_shard": 1},
        "engine": {"name": "xtb", "xtb": {"timeout_s": 60}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    out = tmp_path / "shards" / "s00000-k000.parquet"
    args = [
        "optimize",
        "--config",
        str(tmp_path / "config.yaml"),
        "--dataset",
        "freesolv",
        "--pairs-dir",
        str(tmp_path / "pairs"),
        "--shard",
        "s00000-k000",
        "--out",
        str(out),
        "--parts-cache",
        str(tmp_path / "parts"),
        "--threads",
        "1",
        "--log",
        str(tmp_path / "opt.log"),
        "--no-progress",
    ]
    assert main(args) == 0
    assert pq.read_table(out).num_rows == 1
    assert "wrote 1 samples" in (tmp_path / "opt.log").read_text()
    bad = list(args)
    bad[bad.index("s00000-k000")] = "s00003-k000"
    assert main(bad) == 2


def test_interrupted_shard_resumes_from_its_checkpoint(
    first_run: dict[str, Any], tmp_path: Path
) -> None:
    from pairfactory.qm.optimize import checkpoint_path

    class InterruptingEngine(CountingEngine):
        def optimize(self, numbers: Any, positions: Any, *args: Any, **kwargs: Any) -> Any:
            if len(numbers) > 3 and len([n for n in self.calls if n > 3]) >= 2:
                raise KeyboardInterrupt  # the third complex: as if the job were stopped here
            return super().optimize(numbers, positions, *args, **kwargs)

    out = tmp_path / "s00000-k000.parquet"
    parts = first_run["root"] / "parts"  # warm: only complexes reach the engine
    with pytest.raises(KeyboardInterrupt):
        run_shard(
            first_run["spec"],
            first_run["systems"],
            first_run["settings"],
            out,
            1,
            parts_cache=parts,
            engine=InterruptingEngine(first_run["engine"].inner),
            progress=False,
        )
    assert not out.exists()
    saved = read_shard(checkpoint_path(out))
    assert saved.num_rows == 2

    engine = CountingEngine(first_run["engine"].inner)
    summary = run_shard(
        first_run["spec"],
        first_run["systems"],
        first_run["settings"],
        out,
        1,
        parts_cache=parts,
        engine=engine,
        progress=False,
    )
    assert summary.resumed == 2 and len(engine.calls) == 2 and summary.n_samples == 4
    assert not checkpoint_path(out).exists()
    assert validate_shard(out, first_run["spec"]).valid
    # identical to the uninterrupted run
    a, b = read_shard(first_run["out"]).to_pandas(), read_shard(out).to_pandas()
    assert a.sample_id.tolist() == b.sample_id.tolist()
    assert a.energy_hartree.tolist() == b.energy_hartree.tolist()

    # a checkpoint made with another seed is not reused
    other_out = tmp_path / "other.parquet"
    checkpoint_path(other_out).write_bytes(out.read_bytes())  # 4 samples of seed SEED
    engine.calls.clear()
    summary = run_shard(
        first_run["spec"],
        first_run["systems"],
        QmSettings.from_config(dict(first_run["config"], seed=SEED + 1)),
        other_out,
        1,
        parts_cache=parts,
        engine=engine,
        progress=False,
    )
    assert summary.resumed == 0 and len(engine.calls) == 4
    assert not checkpoint_path(other_out).exists()
