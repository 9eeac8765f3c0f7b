"""Isolated molecules ("parts"): the references of the interaction energy, optimized once.

The isolated solute and solvent of a system are optimized once per unique molecule and engine
settings and cached on disk (``{parts_cache}/{engine_tag}/{sha}.json``), so the interaction energy
``E(complex) − E(solute) − n_solvent·E(solvent)`` never recomputes them, whichever shard needs
them. A molecule with rotatable bonds gets the lowest energy of a few conformers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.fileio import atomic_write_text
from pairfactory.qm.records import SampleStatus

if TYPE_CHECKING:
    from pairfactory.qm.engines.base import Engine

log = logging.getLogger(__name__)

# Conformers tried for an isolated molecule with rotatable bonds; the lowest optimized energy is
# kept, so the reference is not stuck in a high conformer that the complex's copy relaxes out of.
PART_CONFORMERS = 3
PART_CACHE_FORMAT = 1


@dataclass
class PartResult:
    """An isolated molecule optimized by the engine: the reference for the interaction energy."""

    smiles: str
    engine_tag: str
    status: str
    energy_hartree: float | None
    message: str
    n_steps: int
    n_conformers: int
    atomic_numbers: list[int] | None
    positions_angstrom: list[float] | None
    charge: int
    multiplicity: int
    wall_time_s: float
    engine_version: str
    format: int = PART_CACHE_FORMAT


class PartsCache:
    """Isolated-molecule results per engine tag, in memory and on disk (one JSON file each).

    Results that depend on the machine's speed (timeouts) are not written to disk, so a later run
    can try again; everything else is deterministic for fixed engine settings.
    """

    def __init__(
        self,
        root: str | Path,
        engine: Engine | Callable[[], Engine],
        engine_tag: str,
        timeout_s: float | None,
    ) -> None:
        self.folder = Path(root) / engine_tag
        # An engine, or a function that builds it on the first molecule not on disk: prediction
        # from cached molecules must not need, say, the ORCA binary of the training cluster.
        self._engine = engine
        self.engine_tag = engine_tag
        self.timeout_s = timeout_s
        self._memory: dict[str, PartResult] = {}
        self.computed = 0
        self.loaded = 0
        self.engine_cpu_s = 0.0

    @property
    def engine(self) -> Engine:
        if not hasattr(self._engine, "optimize"):  # a builder, not yet called
            self._engine = self._engine()
        return self._engine  # type: ignore[return-value]

    def path_for(self, smiles: str) -> Path:
        return self.folder / f"{hashlib.sha256(smiles.encode()).hexdigest()[:16]}.json"

    def get(self, smiles: str) -> PartResult:
        result = self.cached(smiles)
        if result is None:
            result = self._compute(smiles)
            self.computed += 1
            if result.status != SampleStatus.timeout.value:
                self._store(result)
            self._memory[smiles] = result
        return result

    def cached(self, smiles: str, *, peek: bool = False) -> PartResult | None:
        """The molecule's result from memory or disk, or None where it would be computed.
        ``peek`` only looks: a disk hit is neither counted nor kept in memory."""
        if smiles in self._memory:
            return self._memory[smiles]
        result = self._load(smiles)
        if result is not None and not peek:
            self.loaded += 1
            self._memory[smiles] = result
        return result

    def forget(self, smiles: str) -> None:
        """Drop the molecule from memory (not from disk): a long-lived cache stays small."""
        self._memory.pop(smiles, None)

    def _load(self, smiles: str) -> PartResult | None:
        path = self.path_for(smiles)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
            result = PartResult(**data)
        except (OSError, ValueError, TypeError) as err:
            log.warning("parts cache %s is unreadable (%s); recomputing it", path, err)
            return None
        if (
            result.smiles != smiles
            or result.engine_tag != self.engine_tag
            or result.format != PART_CACHE_FORMAT
        ):
            log.warning("parts cache %s holds another molecule or format; recomputing it", path)
            return None
        return result

    def _store(self, result: PartResult) -> None:
        atomic_write_text(self.path_for(result.smiles), json.dumps(asdict(result), sort_keys=True))

    def _compute(self, smiles: str) -> PartResult:
        """Optimize the molecule's conformers (``part_conformers``) and keep the lowest energy
        among the best status."""
        from pairfactory.qm.samples import (
            EmbeddingError,
            embed_molecule,
            formal_charge_and_unpaired,
            seed_for,
        )

        start = time.monotonic()
        try:
            charge, unpaired = formal_charge_and_unpaired(smiles)
        except EmbeddingError as err:
            return self._failed(smiles, str(err), start)
        multiplicity = unpaired + 1
        n_conformers = part_conformers(smiles)
        best: tuple[Any, ...] | None = None
        messages = []
        n_steps = 0
        for conformer in range(n_conformers):
            # Independent of the global seed: the reference of a molecule is one number per engine
            # tag.
            seed = seed_for(0, f"part\x1f{smiles}", conformer)
            try:
                numbers, positions = embed_molecule(smiles, seed)
            except EmbeddingError as err:
                messages.append(str(err))
                continue
            cpu0 = time.process_time()
            result = self.engine.optimize(numbers, positions, charge, multiplicity, self.timeout_s)
            self.engine_cpu_s += time.process_time() - cpu0
            n_steps += result.n_steps
            if result.message:
                messages.append(f"conformer {conformer}: {result.status.value}: {result.message}")
            if result.energy_hartree is None:
                continue
            rank = (result.status is not SampleStatus.ok, result.energy_hartree)
            if best is None or rank < best[0]:
                best = (rank, result, numbers)
        if best is None:
            return self._failed(
                smiles,
                "; ".join(messages) or "no conformer gave an energy",
                start,
                charge,
                multiplicity,
            )
        _, result, numbers = best
        return PartResult(
            smiles=smiles,
            engine_tag=self.engine_tag,
            status=result.status.value,
            energy_hartree=float(result.energy_hartree),
            message="; ".join(messages),
            n_steps=n_steps,
            n_conformers=n_conformers,
            atomic_numbers=[int(z) for z in numbers],
            positions_angstrom=[float(x) for x in result.positions_angstrom.reshape(-1)],
            charge=charge,
            multiplicity=multiplicity,
            wall_time_s=time.monotonic() - start,
            engine_version=self.engine.version,
        )

    def _failed(
        self, smiles: str, message: str, start: float, charge: int = 0, multiplicity: int = 1
    ) -> PartResult:
        return PartResult(
            smiles=smiles,
            engine_tag=self.engine_tag,
            status=SampleStatus.error.value,
            energy_hartree=None,
            message=message,
            n_steps=0,
            n_conformers=PART_CONFORMERS,
            atomic_numbers=None,
            positions_angstrom=None,
            charge=charge,
            multiplicity=multiplicity,
            wall_time_s=time.monotonic() - start,
            engine_version=self.engine.version,
        )


def part_conformers(smiles: str) -> int:
    """The conformers an isolated molecule gets: one for rigid molecules (water, methanol,
    benzene), PART_CONFORMERS otherwise."""
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    mol = Chem.MolFromSmiles(smiles)
    if mol is None or rdMolDescriptors.CalcNumRotatableBonds(mol) == 0:
        return 1
    return PART_CONFORMERS
