"""GFN-xTB through tblite's ASE calculator, optimized with an ASE optimizer (config
``engine.xtb``)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from pairfactory.errors import UserError
from pairfactory.qm.engines.base import (
    Deadline,
    Engine,
    Outcome,
    ScfFailure,
    Trace,
    require_positive_int,
    require_positive_number,
    require_timeout,
)

XTB_METHODS = ("GFN2-xTB", "GFN1-xTB", "IPEA1-xTB")
ASE_OPTIMIZERS = ("BFGS", "LBFGS", "FIRE")


@dataclass(frozen=True)
class XtbSettings:
    """Config ``engine.xtb``; the defaults are the schema's (tests/qm/test_settings.py)."""

    method: str = "GFN2-xTB"
    accuracy: float = 1.0
    electronic_temperature_k: float = 300.0
    max_scf_iterations: int = 250
    optimizer: str = "BFGS"
    fmax_ev_per_angstrom: float = 0.05
    max_steps: int = 300
    timeout_s: float | None = 120.0

    def __post_init__(self) -> None:
        if self.method not in XTB_METHODS:
            raise UserError(
                f"engine.xtb.method must be one of {', '.join(XTB_METHODS)}; got {self.method!r}"
            )
        if self.optimizer not in ASE_OPTIMIZERS:
            raise UserError(
                f"engine.xtb.optimizer must be one of {', '.join(ASE_OPTIMIZERS)}; "
                f"got {self.optimizer!r}"
            )
        require_positive_number(self.accuracy, "engine.xtb.accuracy")
        require_positive_number(
            self.electronic_temperature_k, "engine.xtb.electronic_temperature_k"
        )
        require_positive_number(self.fmax_ev_per_angstrom, "engine.xtb.fmax_ev_per_angstrom")
        require_positive_int(self.max_scf_iterations, "engine.xtb.max_scf_iterations")
        require_positive_int(self.max_steps, "engine.xtb.max_steps")
        require_timeout(self.timeout_s, "engine.xtb.timeout_s")


class XtbEngine(Engine):
    name = "xtb"

    def __init__(self, settings: XtbSettings | None = None, threads: int = 1) -> None:
        self.settings = settings or XtbSettings()
        super().__init__(threads=threads, default_timeout_s=self.settings.timeout_s)
        self.method = self.settings.method
        self.version = f"tblite {importlib.metadata.version('tblite')}"

    def _calculator(self, charge: int, multiplicity: int) -> Any:
        from tblite.ase import TBLite

        s = self.settings
        return TBLite(
            method=s.method,
            charge=charge,
            multiplicity=multiplicity,
            accuracy=s.accuracy,
            electronic_temperature=s.electronic_temperature_k,
            max_iterations=s.max_scf_iterations,
            verbosity=0,
        )

    def energy(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> float:
        from ase import Atoms

        atoms = Atoms(
            numbers=np.asarray(atomic_numbers),
            positions=np.asarray(positions_angstrom, dtype=float),
        )
        atoms.calc = self._calculator(charge, multiplicity)
        with _quiet_tblite(), _thread_limit(self.threads):
            return _ev_to_hartree(atoms.get_potential_energy())

    def _optimize(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        from ase import Atoms
        from ase.calculators.calculator import CalculationFailed
        from ase.optimize import BFGS, FIRE, LBFGS

        optimizer_cls = {"BFGS": BFGS, "LBFGS": LBFGS, "FIRE": FIRE}[self.settings.optimizer]
        atoms = Atoms(numbers=atomic_numbers, positions=positions_angstrom)
        atoms.calc = self._calculator(charge, multiplicity)
        optimizer = optimizer_cls(atoms, logfile=None)

        def after_step() -> None:
            # Forces (and so the energy) of the current geometry are cached by now: no extra SCF.
            trace.update(
                atoms.get_positions(),
                _ev_to_hartree(atoms.get_potential_energy()),
                optimizer.nsteps,
            )
            deadline.check()

        optimizer.attach(after_step, interval=1)
        try:
            with _quiet_tblite(), _thread_limit(self.threads):
                with deadline.interrupting():
                    converged = bool(
                        optimizer.run(
                            fmax=self.settings.fmax_ev_per_angstrom, steps=self.settings.max_steps
                        )
                    )
                energy = _ev_to_hartree(atoms.get_potential_energy())
        except CalculationFailed as err:
            # tblite reports "SCF not converged in N cycles" as a RuntimeError, wrapped by its ASE
            # layer.
            if "not converged" in str(err).lower():
                raise ScfFailure(
                    f"tblite: {err} "
                    f"(engine.xtb.max_scf_iterations={self.settings.max_scf_iterations})"
                ) from err
            raise
        message = (
            ""
            if converged
            else (
                f"not converged in {self.settings.max_steps} steps "
                f"(fmax {self.settings.fmax_ev_per_angstrom} eV/Å)"
            )
        )
        return Outcome(
            converged=converged,
            energy_hartree=energy,
            positions_angstrom=atoms.get_positions(),
            n_steps=int(optimizer.nsteps),
            message=message,
        )


def _ev_to_hartree(energy_ev: float) -> float:
    # tblite computes in Hartree and ASE's layer multiplies by ase.units.Hartree (CODATA 2014);
    # dividing by the same constant returns tblite's own number exactly. pairfactory.units holds
    # the CODATA 2018 value, which differs in the 9th digit.
    from ase.units import Hartree

    return float(energy_ev) / Hartree


@contextlib.contextmanager
def _quiet_tblite() -> Iterator[None]:
    # tblite 0.4.0's Python layer print()s its post-processing dictionary on every singlepoint
    # (a leftover debug print); keep it out of the CLI's stdout.
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield


@contextlib.contextmanager
def _thread_limit(threads: int) -> Iterator[None]:
    # tblite's OpenMP pool is sized at load time from OMP_NUM_THREADS; threadpoolctl resizes it.
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=threads):
        yield
