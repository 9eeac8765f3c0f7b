"""PySCF (HF or a DFT functional) optimized with geomeTRIC (config ``engine.pyscf``).

The SCF convergence of every optimizer step is checked explicitly (``mf.converged``): PySCF only
warns when an SCF hits ``max_cycle``, and a geometry built on unconverged gradients is not a sample.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import logging
import os
import tempfile
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

CONVERGENCE_SETS = (
    "GAU",
    "GAU_LOOSE",
    "NWCHEM_LOOSE",
    "TURBOMOLE",
    "INTERFRAG_TIGHT",
    "GAU_TIGHT",
    "GAU_VERYTIGHT",
)

# geomeTRIC configures logging with logging.config.fileConfig, which replaces the root logger's
# handlers; this configuration sends its step-by-step report nowhere, and _keep_root_logging puts
# the caller's handlers back afterwards.
_QUIET_GEOMETRIC_LOG_INI = """[loggers]
keys=root

[handlers]
keys=null

[formatters]
keys=plain

[logger_root]
level=WARNING
handlers=null

[handler_null]
class=NullHandler
level=WARNING
formatter=plain
args=()

[formatter_plain]
format=%(message)s
"""


@dataclass(frozen=True)
class PyscfSettings:
    """Config ``engine.pyscf``; the defaults are the schema's (tests/qm/test_settings.py)."""

    method: str = "B3LYP"  # "HF" or any PySCF/libxc functional name
    basis: str = "def2-SVP"
    max_steps: int = 100
    scf_max_cycle: int = 50
    scf_conv_tol: float = 1e-9
    convergence_set: str = "GAU"  # geomeTRIC convergence criteria set
    timeout_s: float | None = 3600.0

    def __post_init__(self) -> None:
        if not isinstance(self.method, str) or not self.method.strip():
            raise UserError(
                "engine.pyscf.method must be a non-empty string (HF or a functional), "
                f"got {self.method!r}"
            )
        if not isinstance(self.basis, str) or not self.basis.strip():
            raise UserError(
                f"engine.pyscf.basis must be a non-empty basis-set name, got {self.basis!r}"
            )
        require_positive_int(self.max_steps, "engine.pyscf.max_steps")
        require_positive_int(self.scf_max_cycle, "engine.pyscf.scf_max_cycle")
        require_positive_number(self.scf_conv_tol, "engine.pyscf.scf_conv_tol")
        if str(self.convergence_set).upper() not in CONVERGENCE_SETS:
            raise UserError(
                "engine.pyscf.convergence_set must be one of "
                f"{', '.join(CONVERGENCE_SETS)}; got {self.convergence_set!r}"
            )
        require_timeout(self.timeout_s, "engine.pyscf.timeout_s")

    @property
    def is_hartree_fock(self) -> bool:
        return self.method.strip().upper() in ("HF", "RHF", "UHF")


class PyscfEngine(Engine):
    name = "pyscf"

    def __init__(self, settings: PyscfSettings | None = None, threads: int = 1) -> None:
        self.settings = settings or PyscfSettings()
        super().__init__(threads=threads, default_timeout_s=self.settings.timeout_s)
        self.method = f"{self.settings.method}/{self.settings.basis}"
        versions = {name: importlib.metadata.version(name) for name in ("pyscf", "geometric")}
        self.version = f"pyscf {versions['pyscf']}, geometric {versions['geometric']}"

    def _mean_field(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
    ) -> Any:
        from pyscf import dft, gto, scf

        mol = gto.M(
            atom=[
                (int(z), tuple(float(c) for c in xyz))
                for z, xyz in zip(atomic_numbers, positions_angstrom)
            ],
            unit="Angstrom",
            basis=self.settings.basis,
            charge=charge,
            spin=multiplicity - 1,
            verbose=0,
        )
        restricted = multiplicity == 1
        if self.settings.is_hartree_fock:
            mf = scf.RHF(mol) if restricted else scf.UHF(mol)
        else:
            mf = dft.RKS(mol) if restricted else dft.UKS(mol)
            mf.xc = self.settings.method
        mf.max_cycle = self.settings.scf_max_cycle
        mf.conv_tol = self.settings.scf_conv_tol
        mf.verbose = 0
        return mf

    def energy(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int = 0,
        multiplicity: int = 1,
    ) -> float:
        with _pyscf_threads(self.threads):
            mf = self._mean_field(
                np.asarray(atomic_numbers),
                np.asarray(positions_angstrom, dtype=float),
                charge,
                multiplicity,
            )
            energy = float(mf.kernel())
        if not mf.converged:
            raise ScfFailure(f"SCF not converged in {self.settings.scf_max_cycle} cycles")
        return energy

    def _optimize(
        self,
        atomic_numbers: np.ndarray,
        positions_angstrom: np.ndarray,
        charge: int,
        multiplicity: int,
        deadline: Deadline,
        trace: Trace,
    ) -> Outcome:
        from pyscf import lib
        from pyscf.geomopt import geometric_solver

        max_cycle = self.settings.scf_max_cycle

        def after_step(envs: dict[str, Any]) -> None:
            # Called by geomeTRIC's PySCF engine after each energy+gradient.
            coords_bohr = np.asarray(envs["coords"]).reshape(-1, 3)
            trace.update(
                coords_bohr * lib.param.BOHR, float(envs["energy"]), int(envs["self"].cycle)
            )
            if not envs["g_scanner"].converged:
                raise ScfFailure(
                    f"SCF not converged in {max_cycle} cycles at optimization step {trace.n_steps} "
                    "(engine.pyscf.scf_max_cycle)"
                )
            deadline.check()

        with tempfile.TemporaryDirectory(prefix="pairfactory-geometric-") as tmp:
            log_ini = os.path.join(tmp, "log.ini")
            with open(log_ini, "w") as handle:
                handle.write(_QUIET_GEOMETRIC_LOG_INI)
            with _pyscf_threads(self.threads), _keep_root_logging():
                mf = self._mean_field(atomic_numbers, positions_angstrom, charge, multiplicity)
                with deadline.interrupting():
                    converged, mol = geometric_solver.kernel(
                        mf,
                        assert_convergence=False,  # checked in after_step, as ScfFailure
                        callback=after_step,
                        maxsteps=self.settings.max_steps,
                        convergence_set=self.settings.convergence_set.upper(),
                        logIni=log_ini,
                    )
        positions = np.asarray(mol.atom_coords(unit="Angstrom"), dtype=np.float64)
        message = "" if converged else f"geomeTRIC not converged in {self.settings.max_steps} steps"
        return Outcome(
            converged=bool(converged),
            energy_hartree=trace.energy_hartree,
            positions_angstrom=positions,
            n_steps=trace.n_steps,
            message=message,
        )


@contextlib.contextmanager
def _pyscf_threads(threads: int) -> Iterator[None]:
    from pyscf import lib

    previous = lib.num_threads()
    lib.num_threads(threads)
    try:
        yield
    finally:
        lib.num_threads(previous)


@contextlib.contextmanager
def _keep_root_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in handlers:
                root.removeHandler(handler)
        for handler in handlers:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(level)
