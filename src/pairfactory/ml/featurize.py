"""Featurize SMILES into DGL molecular graphs: the feature specification and the featurizer.

A molecule becomes a bidirected DGL graph: one node per heavy atom (and per hydrogen that RDKit
keeps as an atom), node features ``ndata["h"]`` (float32, ``ATOM_FEATURE_DIM`` columns) and edge
features ``edata["e"]`` (float32, ``BOND_FEATURE_DIM`` columns, identical for both directions of a
bond). A single-atom molecule (``O``, ``[Na+]``, ``Cl``) is a graph with one node and zero edges;
no self loops are added here (a model that needs them adds them itself).

Every feature column is declared once, in ``ATOM_FEATURES`` and ``BOND_FEATURES`` below; the
sizes, the column names and the cache version (``FEATURE_SPEC_HASH``) all derive from those two
tuples, so changing a feature list changes the hash and invalidates old caches
(``pairfactory.ml.graph_cache``).

Chirality is encoded as the CIP label (R / S / unassigned stereocentre), not as RDKit's
CW/CCW chiral tag: the tag is defined relative to the order of the atom's neighbours, so it flips
when atoms are renumbered, and graph models must not depend on atom order.

torch, dgl and rdkit are imported inside the functions: the feature sizes are read by modules
that must import without them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pairfactory.errors import UserError
from pairfactory.pairs.elements import SUPPORTED_ELEMENTS

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dgl


class FeaturizationError(UserError):
    """A SMILES that cannot be turned into a molecular graph (unparsable, empty, no atoms)."""

    def __init__(self, smiles: str, problem: str) -> None:
        super().__init__(f"cannot featurize SMILES {smiles!r}: {problem}")
        self.smiles = smiles
        self.problem = problem


# --------------------------------------------------------------------------------------------
# The feature specification: the single place where feature columns are defined.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OneHotFeature:
    """A one-hot block: one column per choice, plus an ``other`` column when ``other`` is True.

    A value outside ``choices`` lands in ``other`` (never silently dropped); without an ``other``
    column such a value is a programming error and raises.
    """

    name: str
    choices: tuple[Any, ...]
    other: bool = True

    @property
    def width(self) -> int:
        return len(self.choices) + (1 if self.other else 0)

    def column_names(self) -> list[str]:
        names = [f"{self.name}={c}" for c in self.choices]
        if self.other:
            names.append(f"{self.name}=other")
        return names


@dataclass(frozen=True)
class FlagFeature:
    """A single 0/1 column."""

    name: str

    @property
    def width(self) -> int:
        return 1

    def column_names(self) -> list[str]:
        return [self.name]


# One list for the whole pipeline (curation rejects other elements); anything else that still
# reaches the featurizer (a user's SMILES at prediction time) goes to "element=other".
ELEMENTS: tuple[str, ...] = SUPPORTED_ELEMENTS

ATOM_FEATURES: tuple[OneHotFeature | FlagFeature, ...] = (
    OneHotFeature("element", ELEMENTS),
    # Number of explicit neighbours in the graph (hydrogens not counted unless they are atoms).
    OneHotFeature("degree", (0, 1, 2, 3, 4, 5)),
    OneHotFeature("formal_charge", (-2, -1, 0, 1, 2)),
    OneHotFeature("hybridization", ("S", "SP", "SP2", "SP3", "SP3D", "SP3D2")),
    FlagFeature("aromatic"),
    FlagFeature("in_ring"),
    # Implicit + explicit hydrogens, including hydrogen atoms kept as neighbours.
    OneHotFeature("total_h", (0, 1, 2, 3, 4)),
    # CIP label of a stereocentre; "?" = a stereocentre whose configuration is not specified;
    # pseudo-asymmetric r/s -> other.
    OneHotFeature("chirality", ("none", "R", "S", "?")),
)

BOND_FEATURES: tuple[OneHotFeature | FlagFeature, ...] = (
    OneHotFeature("bond_type", ("SINGLE", "DOUBLE", "TRIPLE", "AROMATIC")),
    FlagFeature("conjugated"),
    FlagFeature("in_ring"),
    # E/Z as RDKit perceives them when parsing the SMILES (CIP-ranked, so independent of atom
    # order); STEREOANY and the relative CIS/TRANS labels -> other.
    OneHotFeature("stereo", ("STEREONONE", "STEREOE", "STEREOZ")),
)

ATOM_FEATURE_DIM: int = sum(f.width for f in ATOM_FEATURES)
BOND_FEATURE_DIM: int = sum(f.width for f in BOND_FEATURES)
ATOM_FEATURE_NAMES: tuple[str, ...] = tuple(n for f in ATOM_FEATURES for n in f.column_names())
BOND_FEATURE_NAMES: tuple[str, ...] = tuple(n for f in BOND_FEATURES for n in f.column_names())

# Bump when the meaning of a column changes without the spec changing (e.g. an RDKit perception
# option), so caches written by the old code are not reused.
_FEATURIZER_REVISION = 1
FEATURE_SPEC_HASH: str = hashlib.sha256(
    repr((_FEATURIZER_REVISION, ATOM_FEATURES, BOND_FEATURES)).encode()
).hexdigest()[:16]


def _encode(spec: Sequence[OneHotFeature | FlagFeature], values: Sequence[Any]) -> list[float]:
    """Concatenate the columns of every feature block for one atom or bond."""
    row: list[float] = []
    for feature, value in zip(spec, values, strict=True):
        if isinstance(feature, FlagFeature):
            row.append(1.0 if value else 0.0)
            continue
        block = [0.0] * feature.width
        try:
            block[feature.choices.index(value)] = 1.0
        except ValueError:
            if not feature.other:
                raise ValueError(
                    f"{feature.name}: value {value!r} not in {feature.choices}"
                ) from None
            block[-1] = 1.0
        row.extend(block)
    return row


def _atom_values(atom: Any, cip: dict[int, str]) -> list[Any]:
    hybridization = str(atom.GetHybridization()).split(".")[-1]
    return [
        atom.GetSymbol(),
        atom.GetDegree(),
        atom.GetFormalCharge(),
        hybridization,
        atom.GetIsAromatic(),
        atom.IsInRing(),
        atom.GetTotalNumHs(includeNeighbors=True),
        cip.get(atom.GetIdx(), "none"),
    ]


def _bond_values(bond: Any) -> list[Any]:
    return [
        str(bond.GetBondType()).split(".")[-1],
        bond.GetIsConjugated(),
        bond.IsInRing(),
        str(bond.GetStereo()).split(".")[-1],
    ]


def _parse(smiles: str) -> Any:
    from rdkit import Chem, RDLogger

    if not isinstance(smiles, str) or not smiles.strip():
        raise FeaturizationError(str(smiles), "empty or not a string")
    RDLogger.DisableLog("rdApp.*")  # RDKit's own stderr chatter; we raise a clear error instead
    try:
        mol = Chem.MolFromSmiles(smiles)
    finally:
        RDLogger.EnableLog("rdApp.*")
    if mol is None:
        raise FeaturizationError(smiles, "RDKit cannot parse it (check valences and brackets)")
    if mol.GetNumAtoms() == 0:
        raise FeaturizationError(smiles, "the molecule has no atoms")
    return mol


def canonical_smiles(smiles: str) -> str:
    """RDKit canonical SMILES (the cache key); raises ``FeaturizationError`` if unparsable."""
    from rdkit import Chem

    return Chem.MolToSmiles(_parse(smiles))


def featurize_mol(mol: Any, smiles: str = "") -> dgl.DGLGraph:
    """Featurize an RDKit molecule in its own atom order (see ``featurize_smiles``)."""
    import dgl
    import torch
    from rdkit import Chem

    src: list[int] = []
    dst: list[int] = []
    bond_rows: list[list[float]] = []
    # Bond features first: the new stereo perception below rewrites STEREOE/Z as CIS/TRANS.
    for bond in mol.GetBonds():
        i, j = bond.GetBeginAtomIdx(), bond.GetEndAtomIdx()
        row = _encode(BOND_FEATURES, _bond_values(bond))
        # Both directions carry the same bond features (edge 2k: i->j, edge 2k+1: j->i).
        src += [i, j]
        dst += [j, i]
        bond_rows += [row, row]

    # CIP labels ('?' = unspecified stereocentre) from RDKit's legacy CIP ranking: it depends on
    # the graph only, not on atom order, and is fast. The new labeller was 20x slower on our
    # datasets and failed ("more than 100000 nodes") on two large Chromophore dyes.
    try:
        centres = Chem.FindMolChiralCenters(
            Chem.Mol(mol), includeUnassigned=True, useLegacyImplementation=True
        )
    except Exception as err:  # RDKit raises a bare RuntimeError on a few exotic valence states
        raise FeaturizationError(smiles, f"stereo perception failed: {err}") from err
    cip = {idx: label for idx, label in centres}
    atom_rows = [_encode(ATOM_FEATURES, _atom_values(a, cip)) for a in mol.GetAtoms()]

    n_atoms = mol.GetNumAtoms()
    graph = dgl.graph(
        (torch.tensor(src, dtype=torch.int64), torch.tensor(dst, dtype=torch.int64)),
        num_nodes=n_atoms,
    )
    graph.ndata["h"] = torch.tensor(atom_rows, dtype=torch.float32).reshape(
        n_atoms, ATOM_FEATURE_DIM
    )
    graph.edata["e"] = torch.tensor(bond_rows, dtype=torch.float32).reshape(
        len(src), BOND_FEATURE_DIM
    )
    return graph


def featurize_smiles(smiles: str) -> dgl.DGLGraph:
    """One SMILES -> bidirected DGL graph with ``ndata["h"]`` and ``edata["e"]`` (float32).

    Atoms keep the order of the SMILES as RDKit parses it; pass a canonical SMILES (what the pair
    tables hold, and what ``GraphCache`` does) for a canonical atom order. Raises
    ``FeaturizationError`` for an empty or unparsable SMILES.
    """
    return featurize_mol(_parse(smiles), smiles)
