"""Seeded random solute–solvent complexes.

Sample k of a system is a function of (global seed, system key, k) only: the conformers of solute
and solvent are embedded with RDKit ETKDGv3 from seeds derived by sha256, and each solvent copy is
placed with a numpy PCG64 generator seeded the same way, so the same inputs give bit-identical
coordinates, independent of which shard or process computes the sample.

Placement of a solvent copy: a uniformly random rotation (a uniform unit quaternion) and a uniformly
random direction from the solute's centroid; the copy starts far out along that direction and slides
in until its closest contact with the atoms already placed equals a target distance drawn uniformly
in [clash, contact]. Sliding in from outside keeps solvents outside the solute (never threaded
through a ring) and makes every copy touch something. A placement that still clashes or does not
touch (numerical corner cases, degenerate settings) is rejected and redrawn; the number of redraws
is recorded.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from pairfactory.errors import UserError
from pairfactory.qm.records import Complex

# RDKit's randomSeed is a signed 32-bit int where -1 means "random": stay in [0, 2**31).
_RDKIT_SEED_RANGE = 2**31
# Keys of the config's ``samples`` section that other stages read (the plan, through
# pairfactory.qm.settings): accepted here and ignored.
_KEYS_READ_ELSEWHERE = frozenset({"per_system"})
# Bisection on the slide distance: 60 halvings of a < 100 Å bracket is far below 1e-10 Å.
_BISECTION_STEPS = 60
# Step of the outside-in scan along the slide direction. The closest-contact distance is
# 1-Lipschitz in the slide distance, so a 0.25 Å step cannot jump over the [clash, contact] window
# unless that window is narrower than 0.25 Å; then bisection still finds the crossing.
_SLIDE_STEP_ANGSTROM = 0.25


class EmbeddingError(Exception):
    """RDKit could not turn a SMILES into 3D coordinates (parse, sanitize or embedding failed)."""

    def __init__(self, smiles: str, reason: str) -> None:
        super().__init__(f"cannot embed SMILES {smiles!r}: {reason}")
        self.smiles = smiles
        self.reason = reason


class PlacementError(Exception):
    """No arrangement without clashes and with contact was found within ``max_placement_tries``."""


@dataclass(frozen=True)
class SamplingSettings:
    """How random complexes are built (config section ``samples``)."""

    n_solvent: int = 1
    clash_distance_angstrom: float = 1.7
    contact_distance_angstrom: float = 3.0
    max_placement_tries: int = 500
    # Force-field cleanup of each ETKDG conformer: "mmff" (UFF where MMFF lacks parameters),
    # "uff", or "none".
    force_field: str = "mmff"

    def __post_init__(self) -> None:
        if not isinstance(self.n_solvent, int) or self.n_solvent < 1:
            raise UserError(f"samples.n_solvent must be an integer >= 1, got {self.n_solvent!r}")
        if not self.clash_distance_angstrom > 0:
            raise UserError(
                f"samples.clash_distance_angstrom must be > 0, got {self.clash_distance_angstrom!r}"
            )
        if not self.contact_distance_angstrom > self.clash_distance_angstrom:
            raise UserError(
                "samples.contact_distance_angstrom must be larger than "
                "samples.clash_distance_angstrom (got contact "
                f"{self.contact_distance_angstrom!r} <= clash {self.clash_distance_angstrom!r})"
            )
        if not isinstance(self.max_placement_tries, int) or self.max_placement_tries < 1:
            raise UserError(
                "samples.max_placement_tries must be an integer >= 1, "
                f"got {self.max_placement_tries!r}"
            )
        if self.force_field not in ("mmff", "uff", "none"):
            raise UserError(
                f"samples.force_field must be one of mmff, uff, none; got {self.force_field!r}"
            )

    @classmethod
    def from_config(cls, section: dict[str, Any] | None) -> SamplingSettings:
        """Build from the config's ``samples`` section; unknown keys are a UserError naming them."""
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known - _KEYS_READ_ELSEWHERE)
        if unknown:
            raise UserError(
                f"unknown key(s) in config section samples: {', '.join(unknown)} "
                f"(known: {', '.join(sorted(known | _KEYS_READ_ELSEWHERE))})"
            )
        values = {name: section[name] for name in known if name in section}
        for name in ("clash_distance_angstrom", "contact_distance_angstrom"):
            if (
                name in values
                and isinstance(values[name], int)
                and not isinstance(values[name], bool)
            ):
                values[name] = float(values[name])
        return cls(**values)


def seed_for(global_seed: int, key: str, k: int) -> int:
    """A seed in [0, 2**31) from sha256 of (global seed, key, k): stable across machines and
    runs."""
    digest = hashlib.sha256(f"{int(global_seed)}\x1f{key}\x1f{int(k)}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % _RDKIT_SEED_RANGE


def embed_molecule(
    smiles: str, seed: int, force_field: str = "mmff"
) -> tuple[np.ndarray, np.ndarray]:
    """3D coordinates of ``smiles`` with explicit hydrogens: (atomic numbers, positions in Å).

    ETKDGv3 with ``randomSeed=seed`` (single-threaded, so deterministic); if that fails, once more
    from random starting coordinates; then raise EmbeddingError. The conformer is cleaned with
    MMFF94 (UFF when MMFF has no parameters) unless ``force_field="none"``.
    """
    from rdkit import Chem, RDLogger
    from rdkit.Chem import AllChem

    RDLogger.DisableLog("rdApp.*")
    try:
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            raise EmbeddingError(smiles, "RDKit cannot parse or sanitize this SMILES")
        mol = Chem.AddHs(mol)
        conf_id = -1
        for use_random_coords in (False, True):
            params = AllChem.ETKDGv3()
            params.randomSeed = int(seed)
            params.numThreads = 1
            params.useRandomCoords = use_random_coords
            conf_id = AllChem.EmbedMolecule(mol, params)
            if conf_id >= 0:
                break
        if conf_id < 0:
            raise EmbeddingError(
                smiles,
                "ETKDGv3 found no 3D embedding (tried distance geometry and random coordinates)",
            )
        if force_field != "none" and mol.GetNumAtoms() > 1:
            _force_field_cleanup(mol, force_field)
    finally:
        RDLogger.EnableLog("rdApp.*")
    numbers = np.array([atom.GetAtomicNum() for atom in mol.GetAtoms()], dtype=np.int64)
    positions = np.array(mol.GetConformer().GetPositions(), dtype=np.float64).reshape(-1, 3)
    if not np.all(np.isfinite(positions)):
        raise EmbeddingError(smiles, "the embedded coordinates are not finite")
    return numbers, positions


def _force_field_cleanup(mol: Any, force_field: str) -> None:
    from rdkit.Chem import AllChem

    # A cleanup that does not converge in 500 iterations still improves on raw ETKDG output, and
    # the geometry is re-optimized by QM anyway: its return code is deliberately not an error.
    if force_field == "mmff" and AllChem.MMFFHasAllMoleculeParams(mol):
        AllChem.MMFFOptimizeMolecule(mol, maxIters=500)
    elif AllChem.UFFHasAllMoleculeParams(mol):
        AllChem.UFFOptimizeMolecule(mol, maxIters=500)


def formal_charge_and_unpaired(smiles: str) -> tuple[int, int]:
    """Total formal charge and number of radical electrons of a SMILES (for charge/multiplicity)."""
    from rdkit import Chem
    from rdkit.Chem import Descriptors

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise EmbeddingError(smiles, "RDKit cannot parse or sanitize this SMILES")
    return int(Chem.GetFormalCharge(mol)), int(Descriptors.NumRadicalElectrons(mol))


def random_rotation(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A rotation uniform over SO(3) (Shoemake's method): (quaternion w,x,y,z; 3×3 matrix)."""
    u1, u2, u3 = rng.random(3)
    a, b = np.sqrt(1.0 - u1), np.sqrt(u1)
    x, y = a * np.sin(2 * np.pi * u2), a * np.cos(2 * np.pi * u2)
    z, w = b * np.sin(2 * np.pi * u3), b * np.cos(2 * np.pi * u3)
    quaternion = np.array([w, x, y, z])
    return quaternion, quaternion_to_matrix(quaternion)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def random_direction(rng: np.random.Generator) -> np.ndarray:
    """A unit vector uniform on the sphere (normalized isotropic Gaussian)."""
    while True:
        v = rng.standard_normal(3)
        norm = float(np.linalg.norm(v))
        if norm > 1e-12:
            return v / norm


def min_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Smallest distance between any atom of ``a`` and any atom of ``b`` (Å)."""
    diff = a[:, None, :] - b[None, :, :]
    return float(np.sqrt(np.min(np.einsum("ijk,ijk->ij", diff, diff))))


def _slide_to_contact(
    placed: np.ndarray, body: np.ndarray, direction: np.ndarray, target: float
) -> float | None:
    """Distance d along ``direction`` at which ``body + d*direction`` first touches ``placed`` at
    ``target``.

    Scans from outside in and bisects the first bracket where the closest contact drops to the
    target. Returns None when the body reaches the origin without touching (cannot happen when
    ``placed`` holds the solute around the origin, kept as a guard).
    """
    reach = float(np.max(np.linalg.norm(placed, axis=1))) + float(
        np.max(np.linalg.norm(body, axis=1))
    )
    far = reach + target + 1.0
    outer = far
    d = far - _SLIDE_STEP_ANGSTROM
    while d >= 0.0:
        if min_distance(placed, body + d * direction) <= target:
            inner = d
            for _ in range(_BISECTION_STEPS):
                mid = 0.5 * (inner + outer)
                if min_distance(placed, body + mid * direction) <= target:
                    inner = mid
                else:
                    outer = mid
            return outer
        outer = d
        d -= _SLIDE_STEP_ANGSTROM
    return None


def sample_complex(
    solute_smiles: str,
    solvent_smiles: str,
    key: str,
    k: int,
    global_seed: int,
    settings: SamplingSettings | None = None,
) -> Complex:
    """Sample k of system ``key``: solute plus ``settings.n_solvent`` randomly placed solvent
    copies.

    Raises EmbeddingError when a SMILES cannot be embedded and PlacementError when no valid
    arrangement is found in ``settings.max_placement_tries`` draws per solvent copy.
    """
    settings = settings or SamplingSettings()
    seed = seed_for(global_seed, key, k)
    rng = np.random.default_rng(seed)
    # Every conformer gets its own seed from the same stream: sample k differs from sample k+1 in
    # conformers as well as in the arrangement.
    solute_z, solute_xyz = embed_molecule(
        solute_smiles, int(rng.integers(_RDKIT_SEED_RANGE)), settings.force_field
    )
    solute_xyz = solute_xyz - solute_xyz.mean(axis=0)
    solute_charge, solute_unpaired = formal_charge_and_unpaired(solute_smiles)
    solvent_charge, solvent_unpaired = formal_charge_and_unpaired(solvent_smiles)

    numbers = [solute_z]
    positions = [solute_xyz]
    fragments = [np.zeros(len(solute_z), dtype=np.int64)]
    arrangement: dict[str, float | int] = {"seed": seed}
    n_redraws = 0
    for copy in range(1, settings.n_solvent + 1):
        solvent_z, solvent_xyz = embed_molecule(
            solvent_smiles, int(rng.integers(_RDKIT_SEED_RANGE)), settings.force_field
        )
        solvent_xyz = solvent_xyz - solvent_xyz.mean(axis=0)
        placed = np.concatenate(positions)
        for _attempt in range(settings.max_placement_tries):
            quaternion, rotation = random_rotation(rng)
            direction = random_direction(rng)
            target = float(
                rng.uniform(settings.clash_distance_angstrom, settings.contact_distance_angstrom)
            )
            body = solvent_xyz @ rotation.T
            distance = _slide_to_contact(placed, body, direction, target)
            if distance is not None:
                candidate = body + distance * direction
                contact = min_distance(placed, candidate)
                if (
                    settings.clash_distance_angstrom
                    <= contact
                    <= settings.contact_distance_angstrom
                ):
                    break
            n_redraws += 1
        else:
            raise PlacementError(
                f"no arrangement of solvent copy {copy} of {solvent_smiles!r} around "
                f"{solute_smiles!r} (system {key!r}, sample {k}) without atoms closer than "
                f"{settings.clash_distance_angstrom} Å and with a contact within "
                f"{settings.contact_distance_angstrom} Å in {settings.max_placement_tries} tries; "
                "widen the window between samples.clash_distance_angstrom and "
                "samples.contact_distance_angstrom or raise samples.max_placement_tries"
            )
        translation = distance * direction
        prefix = f"solvent{copy}_"
        for name, value in zip(("qw", "qx", "qy", "qz"), quaternion):
            arrangement[prefix + name] = float(value)
        for name, value in zip(("tx", "ty", "tz"), translation):
            arrangement[f"{prefix}{name}_angstrom"] = float(value)
        arrangement[prefix + "center_distance_angstrom"] = float(distance)
        arrangement[prefix + "min_contact_angstrom"] = float(contact)
        numbers.append(solvent_z)
        positions.append(candidate)
        fragments.append(np.full(len(solvent_z), copy, dtype=np.int64))
    arrangement["n_redraws"] = n_redraws
    unpaired = solute_unpaired + settings.n_solvent * solvent_unpaired
    return Complex(
        atomic_numbers=np.concatenate(numbers),
        positions_angstrom=np.concatenate(positions),
        fragment_index=np.concatenate(fragments),
        charges=[solute_charge] + [solvent_charge] * settings.n_solvent,
        arrangement=arrangement,
        solute_smiles=solute_smiles,
        solvent_smiles=solvent_smiles,
        key=key,
        k=int(k),
        # High-spin for radicals; closed shells (nearly every row) are singlets.
        multiplicity=unpaired + 1,
    )


def intermolecular_contacts(cx: Complex) -> tuple[float, list[float]]:
    """(closest distance between atoms of different fragments, per solvent copy its closest
    contact)."""
    closest = float("inf")
    per_copy: list[float] = []
    for copy in range(1, cx.n_solvent + 1):
        mine = cx.fragment_positions(copy)
        others = cx.positions_angstrom[cx.fragment_index != copy]
        d = min_distance(mine, others)
        per_copy.append(d)
        closest = min(closest, d)
    return closest, per_copy


def to_atoms(cx: Complex) -> Any:
    """The complex as an ASE ``Atoms`` with a per-atom ``fragment`` array and its identity and
    arrangement in ``info`` (what extended XYZ writes)."""
    from ase import Atoms

    atoms = Atoms(numbers=cx.atomic_numbers, positions=cx.positions_angstrom)
    atoms.set_array("fragment", cx.fragment_index.astype(int))
    atoms.info.update(
        {"key": cx.key, "k": cx.k, "charge": cx.total_charge, "multiplicity": cx.multiplicity}
    )
    atoms.info.update(cx.arrangement)
    return atoms
