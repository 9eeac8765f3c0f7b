"""PySCF + geomeTRIC on a water dimer with a minimal basis, and its failure statuses."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from pairfactory.qm.engines import build_engine
from pairfactory.qm.records import SampleStatus
from pairfactory.qm.samples import sample_complex

# Minimal and loose: HF/STO-3G with geomeTRIC's GAU_LOOSE criteria keeps a water dimer at ~2 s.
FAST = {
    "method": "HF",
    "basis": "sto-3g",
    "max_steps": 40,
    "convergence_set": "GAU_LOOSE",
    "scf_conv_tol": 1e-7,
}


@pytest.fixture(scope="module")
def water_dimer():
    return sample_complex("O", "O", "water|water", 0, 0)


def test_water_dimer_hf_sto3g_optimizes(water_dimer) -> None:
    engine = build_engine({"name": "pyscf", "pyscf": FAST}, threads=1)
    assert engine.method == "HF/sto-3g" and engine.version.startswith("pyscf 2.14")
    root = logging.getLogger()
    handlers_before = list(root.handlers)
    result = engine.optimize(water_dimer.atomic_numbers, water_dimer.positions_angstrom)
    assert result.status is SampleStatus.ok, result.message
    assert result.converged and result.n_steps >= 2
    # HF/STO-3G water is -74.96 Eh; the dimer is twice that, a few mEh lower.
    assert -150.0 < result.energy_hartree < -149.9
    assert result.energy_hartree < engine.energy(
        water_dimer.atomic_numbers, water_dimer.positions_angstrom
    )
    # The optimized O-H bonds are sane (STO-3G: ~0.99 Å).
    xyz = result.positions_angstrom
    assert 0.95 < np.linalg.norm(xyz[0] - xyz[1]) < 1.05
    assert root.handlers == handlers_before  # geomeTRIC's logging.config did not replace ours


def test_scf_cycle_cap_gives_scf_failed(water_dimer) -> None:
    engine = build_engine(
        {"name": "pyscf", "pyscf": {**FAST, "scf_max_cycle": 1, "scf_conv_tol": 1e-12}}
    )
    result = engine.optimize(water_dimer.atomic_numbers, water_dimer.positions_angstrom)
    assert result.status is SampleStatus.scf_failed
    assert "scf_max_cycle" in result.message and result.n_steps == 1


def test_step_cap_gives_not_converged(water_dimer) -> None:
    engine = build_engine(
        {"name": "pyscf", "pyscf": {**FAST, "convergence_set": "GAU_TIGHT", "max_steps": 2}}
    )
    result = engine.optimize(water_dimer.atomic_numbers, water_dimer.positions_angstrom)
    assert result.status is SampleStatus.not_converged and not result.converged
    assert result.energy_hartree is not None and result.positions_angstrom.shape == (6, 3)


def test_timeout_interrupts_pyscf(water_dimer) -> None:
    engine = build_engine({"name": "pyscf", "pyscf": FAST})
    result = engine.optimize(
        water_dimer.atomic_numbers, water_dimer.positions_angstrom, timeout_s=0.05
    )
    assert result.status is SampleStatus.timeout


@pytest.mark.filterwarnings("ignore:Basis may be available")
def test_unknown_basis_gives_error(water_dimer) -> None:
    engine = build_engine({"name": "pyscf", "pyscf": {**FAST, "basis": "no-such-basis"}})
    result = engine.optimize(water_dimer.atomic_numbers, water_dimer.positions_angstrom)
    assert result.status is SampleStatus.error and "no-such-basis" in result.message.lower()
