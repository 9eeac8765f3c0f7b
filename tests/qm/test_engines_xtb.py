"""GFN2-xTB (tblite + ASE) on small real pairs, and each failure status provoked for real."""

from __future__ import annotations

import numpy as np
import pytest

from pairfactory.qm.engines import build_engine
from pairfactory.qm.records import SampleStatus
from pairfactory.qm.samples import sample_complex

PAIRS = [
    ("c1ccccc1O", "O"),  # phenol · water
    ("OC(=O)c1ccccc1", "ClC(Cl)Cl"),  # benzoic acid · chloroform
    ("CO", "O"),  # methanol · water
]


@pytest.fixture(scope="module")
def engine():
    return build_engine({"name": "xtb"}, threads=1)


@pytest.mark.parametrize("solute, solvent", PAIRS)
def test_small_real_pairs_optimize_deterministically(engine, solute: str, solvent: str) -> None:
    cx = sample_complex(solute, solvent, f"{solute}|{solvent}", 0, 0)
    first = engine.optimize(
        cx.atomic_numbers, cx.positions_angstrom, cx.total_charge, cx.multiplicity
    )
    assert first.status is SampleStatus.ok, first.message
    assert first.converged and 0 < first.n_steps < 300
    assert first.positions_angstrom.shape == (cx.n_atoms, 3)
    assert first.engine_version == "tblite 0.4.0"
    # GFN2 energies of such complexes: about -5 Eh per heavy atom; a unit slip (eV) would be ×27.
    n_heavy = int((cx.atomic_numbers > 1).sum())
    assert -8.0 * n_heavy < first.energy_hartree < -2.0 * n_heavy
    # The optimization lowers the energy of the random start.
    assert first.energy_hartree < engine.energy(cx.atomic_numbers, cx.positions_angstrom)
    again = engine.optimize(
        cx.atomic_numbers, cx.positions_angstrom, cx.total_charge, cx.multiplicity
    )
    assert again.energy_hartree == first.energy_hartree
    assert np.array_equal(again.positions_angstrom, first.positions_angstrom)


def test_charged_complex(engine) -> None:
    cx = sample_complex("CC(=O)[O-]", "O", "acetate|water", 0, 0)
    result = engine.optimize(
        cx.atomic_numbers, cx.positions_angstrom, cx.total_charge, cx.multiplicity
    )
    assert result.status is SampleStatus.ok, result.message
    neutral = engine.energy(cx.atomic_numbers, cx.positions_angstrom, 0, 2)
    assert neutral != pytest.approx(result.energy_hartree, abs=1e-3)


def phenol_water():
    return sample_complex("c1ccccc1O", "O", "phenol|water", 1, 0)


def test_max_steps_gives_not_converged_with_last_geometry() -> None:
    cx = phenol_water()
    result = build_engine({"xtb": {"max_steps": 1}}).optimize(
        cx.atomic_numbers, cx.positions_angstrom
    )
    assert result.status is SampleStatus.not_converged and not result.converged
    assert result.n_steps == 1 and result.energy_hartree is not None
    assert result.positions_angstrom.shape == (cx.n_atoms, 3)
    assert not np.array_equal(
        result.positions_angstrom, cx.positions_angstrom
    )  # one step was taken


def test_tiny_timeout_gives_timeout() -> None:
    cx = phenol_water()
    result = build_engine({}).optimize(cx.atomic_numbers, cx.positions_angstrom, timeout_s=1e-4)
    assert result.status is SampleStatus.timeout and not result.converged
    assert "wall-clock" in result.message


def test_scf_iteration_cap_gives_scf_failed() -> None:
    cx = phenol_water()
    result = build_engine({"xtb": {"max_scf_iterations": 2}}).optimize(
        cx.atomic_numbers, cx.positions_angstrom
    )
    assert result.status is SampleStatus.scf_failed
    assert "SCF not converged" in result.message and "max_scf_iterations" in result.message


def test_engine_exception_gives_error() -> None:
    # Two atoms on top of each other: tblite refuses the input ("Too close interatomic distances").
    z = np.array([8, 1, 1, 8])
    xyz = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0], [0, 0, 0]], dtype=float)
    result = build_engine({}).optimize(z, xyz)
    assert result.status is SampleStatus.error
    assert "close" in result.message.lower()


@pytest.mark.parametrize("optimizer", ["LBFGS", "FIRE"])
def test_other_ase_optimizers(optimizer: str) -> None:
    cx = sample_complex("CO", "O", "methanol|water", 0, 0)
    result = build_engine({"xtb": {"optimizer": optimizer, "max_steps": 500}}).optimize(
        cx.atomic_numbers, cx.positions_angstrom
    )
    assert result.status is SampleStatus.ok, result.message


def test_timeout_interrupts_a_running_optimization_and_keeps_its_last_geometry() -> None:
    # An optimization that cannot converge (fmax far below numerical noise, no step cap) is
    # stopped by the wall clock after some steps, with the last geometry and energy kept.
    cx = phenol_water()
    engine = build_engine({"xtb": {"fmax_ev_per_angstrom": 1e-12, "max_steps": 10**7}})
    result = engine.optimize(cx.atomic_numbers, cx.positions_angstrom, timeout_s=0.5)
    assert result.status is SampleStatus.timeout
    assert result.n_steps >= 1 and result.energy_hartree is not None
    assert result.positions_angstrom.shape == (cx.n_atoms, 3)
