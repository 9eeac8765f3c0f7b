"""The applicability domain of a final model: what its training pairs covered, and whether a new
pair lies inside it.

Three checks per pair, each a reason for the ``extrapolation`` flag of a prediction:
- elements: an element of the solute or the solvent that no training molecule contains (the
  featurizer folds unknown elements into one "other" column, so the model cannot know them);
- size: a heavy-atom count outside the range of the training solutes (or solvents);
- similarity: the Tanimoto similarity (Morgan radius 2, 2048 bits) of the solute to its nearest
  training solute below ``min_solute_similarity`` (0.3 by default: below it a Morgan-2 neighbour
  shares little more than common fragments).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

FINGERPRINT = "morgan_r2_2048"
DEFAULT_MIN_SOLUTE_SIMILARITY = 0.3


@dataclass(frozen=True)
class MoleculeFacts:
    """What the domain checks need to know of one molecule."""

    elements: frozenset[str]
    heavy_atoms: int
    fingerprint: Any = field(repr=False, compare=False)


def molecule_facts(mol: Any) -> MoleculeFacts:
    """Elements (hydrogen included when present), heavy-atom count and Morgan fingerprint of an
    RDKit molecule."""
    from rdkit.Chem import rdFingerprintGenerator

    elements = {atom.GetSymbol() for atom in mol.GetAtoms()}
    if any(atom.GetTotalNumHs() for atom in mol.GetAtoms()):
        elements.add("H")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    return MoleculeFacts(
        elements=frozenset(elements),
        heavy_atoms=mol.GetNumHeavyAtoms(),
        fingerprint=generator.GetFingerprint(mol),
    )


def smiles_facts(smiles: str) -> MoleculeFacts:
    """``molecule_facts`` of a SMILES; ValueError where RDKit cannot parse it."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        raise ValueError(f"RDKit cannot parse the SMILES {smiles!r}")
    return molecule_facts(mol)


@dataclass
class TrainingDomain:
    """The elements, size ranges and solute fingerprints of a model's training pairs."""

    elements: frozenset[str]
    solute_heavy_atoms: tuple[int, int]
    solvent_heavy_atoms: tuple[int, int]
    solute_fingerprints: list[Any] = field(repr=False)
    min_solute_similarity: float = DEFAULT_MIN_SOLUTE_SIMILARITY

    @classmethod
    def from_facts(
        cls,
        solutes: Sequence[MoleculeFacts],
        solvents: Sequence[MoleculeFacts],
        min_solute_similarity: float = DEFAULT_MIN_SOLUTE_SIMILARITY,
    ) -> TrainingDomain:
        if not solutes or not solvents:
            raise ValueError("a training domain needs at least one solute and one solvent")
        return cls(
            elements=frozenset().union(*(m.elements for m in [*solutes, *solvents])),
            solute_heavy_atoms=_range(m.heavy_atoms for m in solutes),
            solvent_heavy_atoms=_range(m.heavy_atoms for m in solvents),
            solute_fingerprints=[m.fingerprint for m in solutes],
            min_solute_similarity=min_solute_similarity,
        )

    def summary(self) -> dict[str, Any]:
        """The JSON-able part (the fingerprints are rebuilt from the stored training SMILES)."""
        return {
            "elements": sorted(self.elements),
            "solute_heavy_atoms": list(self.solute_heavy_atoms),
            "solvent_heavy_atoms": list(self.solvent_heavy_atoms),
            "fingerprint": FINGERPRINT,
            "min_solute_similarity": self.min_solute_similarity,
            "n_training_solutes": len(self.solute_fingerprints),
        }

    def nearest_solute_similarity(self, facts: MoleculeFacts) -> float:
        return _nearest_similarity(facts.fingerprint, self.solute_fingerprints)

    def assess(
        self, solute: MoleculeFacts, solvent: MoleculeFacts, solute_similarity: float
    ) -> list[str]:
        """The reasons a pair lies outside the domain (empty: inside)."""
        return [reason for _, reason in self.check(solute, solvent, solute_similarity)]

    def check(
        self, solute: MoleculeFacts, solvent: MoleculeFacts, solute_similarity: float
    ) -> list[tuple[str, str]]:
        """(check, reason) for every check the pair fails, in this order: "elements", "size",
        "similarity"."""
        failed = []
        unseen = sorted((solute.elements | solvent.elements) - self.elements)
        if unseen:
            failed.append(("elements", f"elements not seen in training: {', '.join(unseen)}"))
        for role, facts, (low, high) in (
            ("solute", solute, self.solute_heavy_atoms),
            ("solvent", solvent, self.solvent_heavy_atoms),
        ):
            if not low <= facts.heavy_atoms <= high:
                failed.append(
                    (
                        "size",
                        f"{role} has {facts.heavy_atoms} heavy atoms, training range {low}-{high}",
                    )
                )
        if solute_similarity < self.min_solute_similarity:
            failed.append(
                (
                    "similarity",
                    f"nearest training solute Tanimoto {solute_similarity:.2f} "
                    f"< {self.min_solute_similarity:.2f}",
                )
            )
        return failed


def nearest_training_similarity(
    solutes: Sequence[str], training_solutes: Iterable[str]
) -> np.ndarray:
    """The Tanimoto similarity (Morgan r2, 2048 bits, as ``TrainingDomain``) of each solute SMILES
    to its nearest training solute: 1 for a training solute itself."""
    fingerprints: dict[str, Any] = {}

    def fingerprint(smiles: str) -> Any:
        if smiles not in fingerprints:
            fingerprints[smiles] = smiles_facts(smiles).fingerprint
        return fingerprints[smiles]

    training = [fingerprint(s) for s in sorted(set(training_solutes))]
    if not training:
        raise ValueError("no training solutes to compare with")
    nearest = {
        smiles: _nearest_similarity(fingerprint(smiles), training) for smiles in set(solutes)
    }
    return np.array([nearest[s] for s in solutes], dtype=np.float64)


def _nearest_similarity(fingerprint: Any, others: list[Any]) -> float:
    from rdkit import DataStructs

    return float(np.max(DataStructs.BulkTanimotoSimilarity(fingerprint, others)))


def domain_from_molecules(
    molecules: Any, min_solute_similarity: float | None = None
) -> TrainingDomain:
    """The domain of a model's training molecules (a frame of ``role``, ``smiles``: the model
    folder's ``training_molecules.parquet``)."""
    from rdkit import Chem

    facts: dict[str, list[MoleculeFacts]] = {"solute": [], "solvent": []}
    for role, smiles in zip(molecules["role"], molecules["smiles"], strict=True):
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None:
            facts[role].append(molecule_facts(mol))
    if min_solute_similarity is None:
        min_solute_similarity = DEFAULT_MIN_SOLUTE_SIMILARITY
    return TrainingDomain.from_facts(facts["solute"], facts["solvent"], min_solute_similarity)


def _range(values: Iterable[int]) -> tuple[int, int]:
    values = list(values)
    return (int(min(values)), int(max(values)))
