"""Record types that cross stage boundaries: a sampled complex and one engine result.

Kept free of heavy imports (only numpy) so that the plan/collect stages and Snakemake can import
them cheaply. Units are in every field name that carries one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np


class SampleStatus(StrEnum):
    """Outcome of one optimization. Only ``ok`` means a converged geometry."""

    ok = "ok"
    not_converged = "not_converged"
    scf_failed = "scf_failed"
    timeout = "timeout"
    error = "error"


@dataclass
class EngineResult:
    """What an engine returns for one optimization; never raised, always returned.

    For ``not_converged`` and ``timeout`` the last geometry and energy seen are kept (they are
    still valid noisy samples); for ``scf_failed`` and ``error`` they may be ``None``.
    """

    status: SampleStatus
    energy_hartree: float | None
    positions_angstrom: np.ndarray | None
    n_steps: int
    converged: bool
    wall_time_s: float
    message: str
    engine_version: str

    def __post_init__(self) -> None:
        self.status = SampleStatus(self.status)
        if self.positions_angstrom is not None:
            self.positions_angstrom = np.asarray(self.positions_angstrom, dtype=np.float64).reshape(
                -1, 3
            )


@dataclass
class Complex:
    """One random solute–solvent arrangement: solute atoms first, then each solvent copy.

    ``fragment_index`` is 0 for solute atoms and 1..n_solvent for the solvent copies;
    ``charges[i]`` is the total formal charge of fragment i. ``arrangement`` is a flat mapping of
    numbers (so it stores as columns or JSON): per solvent copy ``solvent{i}_q{w,x,y,z}`` (rotation
    quaternion), ``solvent{i}_t{x,y,z}_angstrom`` (translation of the copy's centroid),
    ``solvent{i}_center_distance_angstrom``, ``solvent{i}_min_contact_angstrom``; and
    ``n_redraws`` (rejected arrangements before this one) and ``seed``.
    """

    atomic_numbers: np.ndarray
    positions_angstrom: np.ndarray
    fragment_index: np.ndarray
    charges: list[int]
    arrangement: dict[str, float | int]
    solute_smiles: str
    solvent_smiles: str
    key: str = ""
    k: int = 0
    multiplicity: int = 1

    def __post_init__(self) -> None:
        self.atomic_numbers = np.asarray(self.atomic_numbers, dtype=np.int64)
        self.positions_angstrom = np.asarray(self.positions_angstrom, dtype=np.float64).reshape(
            -1, 3
        )
        self.fragment_index = np.asarray(self.fragment_index, dtype=np.int64)
        n = len(self.atomic_numbers)
        if self.positions_angstrom.shape[0] != n or self.fragment_index.shape[0] != n:
            raise ValueError(
                f"Complex: {n} atomic numbers but {self.positions_angstrom.shape[0]} positions and "
                f"{self.fragment_index.shape[0]} fragment indices"
            )

    @property
    def n_atoms(self) -> int:
        return int(len(self.atomic_numbers))

    @property
    def n_solvent(self) -> int:
        return int(self.fragment_index.max()) if self.n_atoms else 0

    @property
    def total_charge(self) -> int:
        return int(sum(self.charges))

    def fragment_positions(self, fragment: int) -> np.ndarray:
        return self.positions_angstrom[self.fragment_index == fragment]
