"""ΔG_solv with the xtb program (pairfactory.qm.solvation).

The tests taking the ``xtb_program`` fixture run the real program (skipped when it is not
installed, installed or failed under PAIRFACTORY_REQUIRE_XTB=1 as in CI); the others use a fake
``xtb`` script or no program at all.
"""

from __future__ import annotations

import json
import stat
import subprocess
from pathlib import Path

import pytest

from pairfactory.errors import UserError
from pairfactory.qm import solvation
from pairfactory.qm.solvation import (
    STATUS_FAILED,
    STATUS_OK,
    STATUS_UNPARAMETRIZED,
    SolvationCache,
    alpb_solvent_name,
)


def _geometry(smiles: str) -> tuple[list[int], list[float]]:
    """A seeded RDKit + MMFF geometry (the tests must not depend on the shared parts cache)."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(mol, randomSeed=7) == 0
    AllChem.MMFFOptimizeMolecule(mol)
    pos = mol.GetConformer().GetPositions()
    return [a.GetAtomicNum() for a in mol.GetAtoms()], pos.reshape(-1).tolist()


def _forbid_subprocess(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"xtb must not run here: {args}")

    monkeypatch.setattr(solvation.subprocess, "run", fail)


@pytest.mark.parametrize(
    ("smiles", "name"),
    [
        ("O", "water"),
        ("[O-][N+](C)=O", "nitromethane"),
        ("ClC(Cl)Cl", "chcl3"),
        ("OCCCCCCCC", "octanol"),
        ("CCCCCCCCCCCCCCCC", "hexadecane"),
        ("CCO", None),
        ("CCCCCCCCCC", None),
        ("not a smiles", None),
    ],
)
def test_alpb_solvent_names(smiles: str, name: str | None) -> None:
    assert alpb_solvent_name(smiles) == name


@pytest.mark.parametrize(("smiles", "low", "high"), [("O", -20.0, -3.0), ("CCO", -10.0, -1.0)])
def test_real_xtb_in_water_is_negative_and_cached(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    smiles: str,
    low: float,
    high: float,
    xtb_program: str,
) -> None:
    z, pos = _geometry(smiles)
    cache = SolvationCache(tmp_path)
    first = cache.get(smiles, "O", z, pos)
    assert first.status == STATUS_OK, first.message
    assert first.alpb_solvent == "water"
    # A few kcal/mol, negative (experiment: water −6.3, ethanol −5.0; ALPB overbinds water).
    assert first.dg_solv_kcal_mol is not None and low < first.dg_solv_kcal_mol < high
    assert first.dg_solv_hartree == pytest.approx(first.dg_solv_kcal_mol / 627.5094740631)
    assert first.xtb_version.startswith("6.") and not first.from_cache
    terms = [first.dg_elec_kcal_mol, first.dg_sasa_kcal_mol, first.dg_hbond_kcal_mol,
             first.dg_shift_kcal_mol]  # fmt: skip
    assert all(term is not None for term in terms)
    assert sum(terms) == pytest.approx(first.dg_solv_kcal_mol, abs=1e-6)  # ΔG_solv's terms
    assert first.dg_hbond_kcal_mol < 0 and first.dg_elec_kcal_mol < 0
    assert (cache.computed, cache.loaded) == (1, 0)
    files = list(tmp_path.rglob("*.json"))
    assert len(files) == 1 and files[0].parent.name == f"xtb-{first.xtb_version}-alpb"

    # The second call, and a fresh cache object on the same folder, read the file: xtb never runs.
    _forbid_subprocess(monkeypatch)
    second = cache.get(smiles, "O", z, pos)
    third = SolvationCache(tmp_path).get(smiles, "O", z, pos)
    for again in (second, third):
        assert again.from_cache and again.dg_solv_kcal_mol == first.dg_solv_kcal_mol
    assert (cache.computed, cache.loaded) == (1, 1)


def test_unparametrized_solvent_gives_none_without_running_xtb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _forbid_subprocess(monkeypatch)
    # Not even a binary is needed.
    cache = SolvationCache(tmp_path, xtb_binary=tmp_path / "no" / "xtb")
    result = cache.get("CCO", "CCCCCCCCCC", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    assert result.status == STATUS_UNPARAMETRIZED
    assert result.dg_solv_kcal_mol is None and result.alpb_solvent is None
    assert cache.computed == 0 and not list(tmp_path.rglob("*.json"))


def test_missing_binary_is_a_clear_user_error(tmp_path: Path) -> None:
    cache = SolvationCache(tmp_path, xtb_binary=tmp_path / "nonexistent" / "xtb")
    with pytest.raises(UserError, match="apt-get install xtb") as info:
        cache.get("O", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    assert "conda install -c conda-forge xtb" in str(info.value)


def _fake_xtb(folder: Path, body: str) -> Path:
    """A shell script that answers --version like xtb 6.5.1 and runs ``body`` otherwise."""
    path = folder / "xtb"
    path.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "--version" ]; then echo "   * xtb version 6.5.1 (fake)"; exit 0; fi\n'
        f"{body}\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_fake_xtb_output_is_parsed_and_threads_are_one(tmp_path: Path) -> None:
    body = (
        'echo "OMP=$OMP_NUM_THREADS args=$*" > "$(dirname "$0")/call.txt"\n'
        "cat <<'EOF'\n"
        "        Reference state                gsolv [1 M gas/solution]\n"
        "         :: total energy              -5.084812531244 Eh    ::\n"
        "         :: -> Gsolv                  -0.010000000000 Eh    ::\n"
        "EOF"
    )
    xtb = _fake_xtb(tmp_path, body)
    result = SolvationCache(tmp_path / "cache", xtb_binary=xtb).get(
        "O", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0], charge=0, uhf=0
    )
    assert result.status == STATUS_OK
    assert result.dg_solv_kcal_mol == pytest.approx(-6.275094740631)
    assert result.total_energy_hartree == pytest.approx(-5.084812531244)
    assert result.reference_state == "gsolv [1 M gas/solution]"
    assert result.dg_elec_kcal_mol is None, "an output without the terms gives none"
    call = (tmp_path / "call.txt").read_text()
    assert "OMP=1 " in call and "--alpb water --chrg 0 --uhf 0" in call


def test_the_terms_of_gsolv_are_parsed_and_an_older_cache_format_is_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        "cat <<'EOF'\n"
        "         :: -> Gsolv                  -0.019264495636 Eh    ::\n"
        "         ::    -> Gelec               -0.007597045569 Eh    ::\n"
        "         ::    -> Gsasa                0.001949717350 Eh    ::\n"
        "         ::    -> Ghb                 -0.014697927115 Eh    ::\n"
        "         ::    -> Gshift               0.001080759698 Eh    ::\n"
        "EOF"
    )
    cache = SolvationCache(tmp_path / "cache", xtb_binary=_fake_xtb(tmp_path, body))
    water = ("O", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    result = cache.get(*water)
    hartree = 627.5094740631
    assert result.dg_elec_kcal_mol == pytest.approx(-0.007597045569 * hartree)
    assert result.dg_sasa_kcal_mol == pytest.approx(0.001949717350 * hartree)
    assert result.dg_hbond_kcal_mol == pytest.approx(-0.014697927115 * hartree)
    assert result.dg_shift_kcal_mol == pytest.approx(0.001080759698 * hartree)
    assert not cache.needs_run("O", "O")
    # an entry of format 1 (no terms) is run again, and the upgrade is said once, not per entry
    (entry,) = (tmp_path / "cache").rglob("*.json")
    old = json.loads(entry.read_text())
    for key in ("dg_elec_kcal_mol", "dg_sasa_kcal_mol", "dg_hbond_kcal_mol", "dg_shift_kcal_mol"):
        del old[key]
    entry.write_text(json.dumps({**old, "format": 1}))
    assert cache.needs_run("O", "O")
    methanol = ("CO", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    cache.get(*methanol)
    (second,) = (e for e in (tmp_path / "cache").rglob("*.json") if e != entry)
    second.write_text(json.dumps({**json.loads(second.read_text()), "format": 1}))
    with caplog.at_level("INFO", logger=solvation.__name__):
        again = cache.get(*water)
        cache.get(*methanol)
    assert not again.from_cache and again.dg_hbond_kcal_mol == result.dg_hbond_kcal_mol
    assert cache.computed == 4 and not cache.needs_run("O", "O")
    # an entry that names no format is no current entry either
    entry.write_text(json.dumps({k: v for k, v in json.loads(entry.read_text()).items()
                                 if k != "format"}))  # fmt: skip
    assert cache.needs_run("O", "O") and not cache.get(*water).from_cache
    assert sum("format 1" in r.getMessage() for r in caplog.records) == 1


def test_failed_run_is_reported_and_not_cached(tmp_path: Path) -> None:
    body = 'echo "-1- solv_model_loadInternalParam: broken"; exit 1'
    xtb = _fake_xtb(tmp_path, body)
    cache = SolvationCache(tmp_path / "cache", xtb_binary=xtb)
    result = cache.get("O", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    assert result.status == STATUS_FAILED and result.dg_solv_kcal_mol is None
    assert "exit 1" in result.message and "broken" in result.message
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_timeout_is_a_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    xtb = _fake_xtb(tmp_path, "exit 0")

    def slow(command: list[str], **kwargs: object) -> None:
        raise subprocess.TimeoutExpired(command, 1.0)

    cache = SolvationCache(tmp_path / "cache", xtb_binary=xtb, timeout_s=1.0)
    cache._program()  # resolve the version with the real subprocess first
    monkeypatch.setattr(solvation.subprocess, "run", slow)
    result = cache.get("O", "O", [8, 1, 1], [0, 0, 0, 0.96, 0, 0, -0.24, 0.93, 0])
    assert result.status == solvation.STATUS_TIMEOUT and result.dg_solv_kcal_mol is None
