"""Featurize SMILES into DGL molecular graphs, cache them on disk, and batch solute–solvent pairs.

A molecule becomes a bidirected DGL graph: one node per heavy atom (and per hydrogen that RDKit
keeps as an atom), node features ``ndata["h"]`` (float32, ``ATOM_FEATURE_DIM`` columns) and edge
features ``edata["e"]`` (float32, ``BOND_FEATURE_DIM`` columns, identical for both directions of a
bond). A single-atom molecule (``O``, ``[Na+]``, ``Cl``) is a graph with one node and zero edges;
no self loops are added here (a model that needs them adds them itself).

Every feature column is declared once, in ``ATOM_FEATURES`` and ``BOND_FEATURES`` below; the sizes,
the column names and the cache version (``FEATURE_SPEC_HASH``) all derive from those two tuples, so
changing a feature list changes the hash and invalidates old caches.

Chirality is encoded as the CIP label (R / S / unassigned stereocentre), not as RDKit's
CW/CCW chiral tag: the tag is defined relative to the order of the atom's neighbours, so it flips
when atoms are renumbered, and graph models must not depend on atom order.

Example::

    pairfactory featurize --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet \\
        --cache results/graphs/graph_cache.pt --rejects results/graphs/freesolv_rejects.parquet

Heavy libraries (torch, dgl, rdkit) are imported inside functions so that ``pairfactory --help``
stays fast; this module is the ``featurize`` subcommand.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.errors import InputFileError, UserError
from pairfactory.io import atomic_write

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dgl
    import pandas as pd
    import torch

log = logging.getLogger(__name__)


class FeaturizationError(UserError):
    """A SMILES string that cannot be turned into a molecular graph (unparsable, empty, no atoms)."""

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


# The elements that occur in the bundled and configured datasets (Chromophore, FreeSolv, MNSol,
# CombiSolv-Exp: 8,873 unique SMILES counted on 2026-11-25), most frequent first; anything else
# (metals in future datasets, ...) goes to "element=other".
ELEMENTS: tuple[str, ...] = (
    "C", "N", "O", "F", "S", "Cl", "B", "Si", "Br", "P", "I", "Se", "H", "Na", "Te", "Ge", "Sn",
)

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
                raise ValueError(f"{feature.name}: value {value!r} not in {feature.choices}") from None
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
    graph.ndata["h"] = torch.tensor(atom_rows, dtype=torch.float32).reshape(n_atoms, ATOM_FEATURE_DIM)
    graph.edata["e"] = torch.tensor(bond_rows, dtype=torch.float32).reshape(len(src), BOND_FEATURE_DIM)
    return graph


def featurize_smiles(smiles: str) -> dgl.DGLGraph:
    """One SMILES -> bidirected DGL graph with ``ndata["h"]`` and ``edata["e"]`` (float32).

    Atoms keep the order of the SMILES as RDKit parses it; pass a canonical SMILES (what the pair
    tables hold, and what ``GraphCache`` does) for a canonical atom order. Raises
    ``FeaturizationError`` for an empty or unparsable SMILES.
    """
    return featurize_mol(_parse(smiles), smiles)


# --------------------------------------------------------------------------------------------
# The on-disk cache
# --------------------------------------------------------------------------------------------

_CACHE_FORMAT = 1


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    failures: int = 0


class GraphCache:
    """Featurize each unique canonical SMILES once, and keep the graphs on disk between runs.

    ``GraphCache(None)`` is an in-memory cache. With a path, an existing file is loaded if it was
    written with the same ``FEATURE_SPEC_HASH`` (otherwise it is ignored with a warning and
    rebuilt), and ``save()`` writes it atomically (temporary file + rename), so a crash or a
    concurrent writer never leaves a truncated cache. The file is a ``torch.save`` of plain
    tensors, lists and strings, loaded with ``weights_only=True`` (no pickled code).

    A lookup first tries the SMILES string as given (pair tables already hold canonical SMILES;
    other spellings seen before are remembered, on disk too), so a hit does not touch RDKit.
    SMILES that fail are remembered with their reason too.
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._graphs: dict[str, dgl.DGLGraph] = {}
        self._failures: dict[str, str] = {}
        self._alias: dict[str, str] = {}  # SMILES as given -> canonical key
        self._dirty = False
        self.stats = CacheStats()
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, smiles: str) -> bool:
        key = self._alias.get(smiles, smiles)
        return key in self._graphs

    @property
    def failures(self) -> dict[str, str]:
        """SMILES that could not be featurized -> reason."""
        return dict(self._failures)

    def get(self, smiles: str) -> dgl.DGLGraph:
        """The graph of ``smiles`` (canonicalized); raises ``FeaturizationError`` if it fails.

        The returned graph is shared: do not modify it in place (``dgl.batch`` copies).
        """
        key = self._alias.get(smiles, smiles)
        if key in self._graphs:
            self.stats.hits += 1
            return self._graphs[key]
        if key in self._failures:
            self.stats.hits += 1
            raise FeaturizationError(smiles, self._failures[key])
        self.stats.misses += 1
        try:
            canonical = canonical_smiles(smiles)
        except FeaturizationError as err:
            self._remember_failure(smiles, err.problem)
            raise
        self._alias[smiles] = canonical
        if canonical in self._graphs:
            return self._graphs[canonical]
        try:
            graph = featurize_smiles(canonical)
        except FeaturizationError as err:
            self._remember_failure(canonical, err.problem)
            self._alias[smiles] = canonical
            raise
        self._graphs[canonical] = graph
        self._dirty = True
        return graph

    def _remember_failure(self, key: str, problem: str) -> None:
        self._failures[key] = problem
        self.stats.failures += 1
        self._dirty = True

    def featurize_all(self, smiles: Iterable[str], desc: str = "featurize") -> dict[str, str]:
        """Featurize every unique SMILES (tqdm bar); returns {SMILES: reason} of the failures."""
        from tqdm import tqdm

        unique = list(dict.fromkeys(smiles))
        failed: dict[str, str] = {}
        for s in tqdm(unique, desc=desc, unit="mol", mininterval=1.0, disable=len(unique) < 200):
            try:
                self.get(s)
            except FeaturizationError as err:
                failed[s] = err.problem
        log.info(
            "featurized %d unique SMILES (%d failed); cache holds %d graphs",
            len(unique), len(failed), len(self._graphs),
        )
        return failed

    # -- disk ---------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        import dgl
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if payload.get("format") != _CACHE_FORMAT or payload.get("spec_hash") != FEATURE_SPEC_HASH:
                log.warning(
                    "graph cache %s was written with other features (spec %s, now %s): rebuilding it",
                    path, payload.get("spec_hash"), FEATURE_SPEC_HASH,
                )
                self._dirty = True
                return
            smiles: list[str] = payload["smiles"]
            n_nodes = payload["num_nodes"].tolist()
            n_edges = payload["num_edges"].tolist()
            h_parts = torch.split(payload["h"].to(torch.float32), n_nodes)
            e_parts = torch.split(payload["e"].to(torch.float32), n_edges)
            src_parts = torch.split(payload["src"].to(torch.int64), n_edges)
            dst_parts = torch.split(payload["dst"].to(torch.int64), n_edges)
        except Exception as err:  # unreadable, truncated, or an unexpected layout
            log.warning("graph cache %s is unreadable (%s): rebuilding it", path, err)
            self._dirty = True
            return
        graphs: dict[str, dgl.DGLGraph] = {}
        for key, n, h, e, s, d in zip(smiles, n_nodes, h_parts, e_parts, src_parts, dst_parts, strict=True):
            g = dgl.graph((s, d), num_nodes=n)
            g.ndata["h"] = h
            g.edata["e"] = e
            graphs[key] = g
        self._graphs.update(graphs)
        self._failures.update(payload.get("failures", {}))
        self._alias.update(payload.get("aliases", {}))
        log.info("graph cache %s: loaded %d graphs, %d known failures", path, len(graphs), len(self._failures))

    def save(self, path: Path | str | None = None) -> Path | None:
        """Write the cache atomically (to ``path`` or the constructor's path); a no-op in memory."""
        import torch

        target = Path(path) if path is not None else self.path
        if target is None:
            return None
        if not self._dirty and target == self.path and target.exists():
            return target
        keys = sorted(self._graphs)
        graphs = [self._graphs[k] for k in keys]
        edge_pairs = [g.edges() for g in graphs]
        payload = {
            "format": _CACHE_FORMAT,
            "spec_hash": FEATURE_SPEC_HASH,
            "atom_feature_names": list(ATOM_FEATURE_NAMES),
            "bond_feature_names": list(BOND_FEATURE_NAMES),
            "smiles": keys,
            "num_nodes": torch.tensor([g.num_nodes() for g in graphs], dtype=torch.int64),
            "num_edges": torch.tensor([g.num_edges() for g in graphs], dtype=torch.int64),
            # Features are 0/1 by construction: uint8 on disk is 4x smaller than float32.
            "h": _cat([g.ndata["h"] for g in graphs], (0, ATOM_FEATURE_DIM), torch.uint8),
            "e": _cat([g.edata["e"] for g in graphs], (0, BOND_FEATURE_DIM), torch.uint8),
            "src": _cat([s for s, _ in edge_pairs], (0,), torch.int32),
            "dst": _cat([d for _, d in edge_pairs], (0,), torch.int32),
            "failures": dict(self._failures),
            # non-canonical spellings seen -> canonical key, so they hit without RDKit next run
            "aliases": {k: v for k, v in self._alias.items() if k != v},
        }
        atomic_write(target, lambda tmp: torch.save(payload, tmp))
        if target == self.path:
            self._dirty = False
        log.info("graph cache %s: wrote %d graphs", target, len(keys))
        return target


def _cat(parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    import torch

    return torch.cat(parts).to(dtype) if parts else torch.zeros(empty_shape, dtype=dtype)


# --------------------------------------------------------------------------------------------
# Pairs: dataset, batch, collate
# --------------------------------------------------------------------------------------------

SOLUTE_COLUMN = "solute_smiles"
SOLVENT_COLUMN = "solvent_smiles"
REJECT_COLUMNS = ("row", "pair_id", "solute_smiles", "solvent_smiles", "reason", "detail")


@dataclass
class PairItem:
    """One featurized pair; ``index`` is its 0-based row position in the pair table given."""

    solute: dgl.DGLGraph
    solvent: dgl.DGLGraph
    y: float
    index: int


@dataclass
class PairBatch:
    """A mini-batch of pairs: two batched graphs, targets ``y`` [B] and row positions ``index`` [B]."""

    solute: dgl.DGLGraph
    solvent: dgl.DGLGraph
    y: torch.Tensor
    index: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            solute=self.solute.to(device),
            solvent=self.solvent.to(device),
            y=self.y.to(device),
            index=self.index.to(device),
        )


def collate_pairs(batch: Sequence[PairItem]) -> PairBatch:
    """Batch ``PairItem``s (use as ``DataLoader(..., collate_fn=collate_pairs)``)."""
    import dgl
    import torch

    if len(batch) == 0:
        raise ValueError("collate_pairs: empty batch")
    return PairBatch(
        solute=dgl.batch([item.solute for item in batch]),
        solvent=dgl.batch([item.solvent for item in batch]),
        y=torch.tensor([item.y for item in batch], dtype=torch.float32),
        index=torch.tensor([item.index for item in batch], dtype=torch.int64),
    )


@dataclass
class PairGraphDataset:
    """Featurized pairs of a pair table; rows that cannot be used are reported in ``rejected``.

    ``pairs_df`` needs ``solute_smiles``, ``solvent_smiles`` and ``target_column``. A row is
    rejected (reason ``solute_unfeaturizable``, ``solvent_unfeaturizable`` or ``missing_target``)
    instead of being dropped silently; ``len(pairs_df) == len(dataset) + len(dataset.rejected)``
    always holds. ``dataset[i].index`` is the row position (0-based, ``iloc``) in ``pairs_df``.
    """

    pairs_df: pd.DataFrame = field(repr=False)
    cache: GraphCache
    target_column: str = "value"
    items: list[PairItem] = field(init=False, repr=False)
    rejected: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import pandas as pd

        missing = [
            c for c in (SOLUTE_COLUMN, SOLVENT_COLUMN, self.target_column) if c not in self.pairs_df.columns
        ]
        if missing:
            raise UserError(
                f"pair table lacks column(s) {missing}; it has {list(self.pairs_df.columns)}. "
                "Pass a pair table written by `pairfactory pairs` or set target_column."
            )
        df = self.pairs_df
        pair_ids = df["pair_id"].tolist() if "pair_id" in df.columns else [None] * len(df)
        solutes = df[SOLUTE_COLUMN].tolist()
        solvents = df[SOLVENT_COLUMN].tolist()
        targets = df[self.target_column].tolist()
        self.cache.featurize_all(list(solutes) + list(solvents), desc="featurize pairs")

        items: list[PairItem] = []
        rejects: list[dict[str, Any]] = []
        for row, (pid, solute, solvent, y) in enumerate(zip(pair_ids, solutes, solvents, targets, strict=True)):
            problem = self._problem(solute, solvent, y)
            if problem is not None:
                reason, detail = problem
                rejects.append(
                    {"row": row, "pair_id": pid, "solute_smiles": solute, "solvent_smiles": solvent,
                     "reason": reason, "detail": detail}
                )
                continue
            items.append(PairItem(self.cache.get(solute), self.cache.get(solvent), float(y), row))
        self.items = items
        self.rejected = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))
        if len(items) + len(self.rejected) != len(df):  # reconciliation: nothing lost
            raise AssertionError(f"{len(items)} kept + {len(self.rejected)} rejected != {len(df)} rows")
        if len(self.rejected):
            log.warning(
                "%d of %d pairs rejected: %s", len(self.rejected), len(df),
                self.rejected["reason"].value_counts().to_dict(),
            )

    def _problem(self, solute: Any, solvent: Any, y: Any) -> tuple[str, str] | None:
        for role, smiles in (("solute", solute), ("solvent", solvent)):
            try:
                self.cache.get(smiles)
            except FeaturizationError as err:
                return f"{role}_unfeaturizable", err.problem
        try:
            value = float(y)
        except (TypeError, ValueError):
            return "missing_target", f"{self.target_column}={y!r} is not a number"
        if not math.isfinite(value):
            return "missing_target", f"{self.target_column}={y!r} is not finite"
        return None

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> PairItem:
        return self.items[i]

    @property
    def rows(self) -> list[int]:
        """Row positions (``iloc``) of the kept pairs, in dataset order."""
        return [item.index for item in self.items]


# --------------------------------------------------------------------------------------------
# CLI: pairfactory featurize
# --------------------------------------------------------------------------------------------

EPILOG = """example:
  pairfactory featurize --pairs results/pairs/freesolv/dg_hydration_kcal_mol.parquet \\
      --cache results/graphs/graph_cache.pt --rejects results/graphs/freesolv_rejects.parquet
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--pairs", type=Path, nargs="+", required=True, help="pair table(s) (Parquet)")
    parser.add_argument("--cache", type=Path, required=True, help="graph cache file to create or extend")
    parser.add_argument(
        "--rejects", type=Path, default=None,
        help="write the SMILES that could not be featurized here (Parquet: smiles, reason, table)",
    )


def run(args: argparse.Namespace) -> int:
    import pandas as pd

    import pyarrow.parquet as pq

    # Check every table before featurizing anything, so a typo fails in a second.
    for table in args.pairs:
        if not table.is_file():
            raise InputFileError(table, "no such pair table; run `pairfactory pairs` first")
        try:
            columns = set(pq.read_schema(table).names)
        except Exception as err:
            raise InputFileError(table, f"not a Parquet file ({err})") from err
        if not {SOLUTE_COLUMN, SOLVENT_COLUMN} <= columns:
            raise InputFileError(
                table, f"not a pair table: no {SOLUTE_COLUMN}/{SOLVENT_COLUMN} columns (has {sorted(columns)})"
            )

    cache = GraphCache(args.cache)
    rows: list[dict[str, str]] = []
    seen: set[str] = set()
    for table in args.pairs:
        df = pd.read_parquet(table, columns=[SOLUTE_COLUMN, SOLVENT_COLUMN])
        smiles = [s for s in dict.fromkeys(df[SOLUTE_COLUMN].tolist() + df[SOLVENT_COLUMN].tolist()) if s not in seen]
        seen.update(smiles)
        failed = cache.featurize_all(smiles, desc=f"featurize {table.name}")
        rows += [{"smiles": s, "reason": r, "table": str(table)} for s, r in failed.items()]
    cache.save()
    if args.rejects is not None:
        rejects = pd.DataFrame(rows, columns=["smiles", "reason", "table"])
        atomic_write(args.rejects, lambda tmp: rejects.to_parquet(tmp, index=False))
    print(
        f"{len(seen)} unique SMILES in {len(args.pairs)} table(s): {len(seen) - len(rows)} featurized, "
        f"{len(rows)} failed; cache {args.cache} holds {len(cache)} graphs "
        f"(features: {ATOM_FEATURE_DIM} per atom, {BOND_FEATURE_DIM} per bond, spec {FEATURE_SPEC_HASH})"
    )
    return 0
