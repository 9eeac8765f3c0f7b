"""Sample sets: every pair-table row's QM samples, matched atom by atom to its graphs.

For each row of a pair table, the samples of its system (``system_id``, the plan's hash of the two
canonical SMILES) are read from the shards with the shard reader. Only ``ok`` samples are kept,
and only those whose atoms provably are the graphs' atoms: the featurizer and the sampler both
parse the same canonical SMILES with RDKit, so graph node ``i`` of the solute *should* be atom
``i`` of the complex (and the solvent copy's atoms follow the solute's); that is *checked*, not
assumed — the element of every node, and every pair of nodes: bonded in the graph exactly when
the two atoms are in covalent contact in the optimized geometry (distance below the sum of their
covalent radii + ``bond_tolerance_angstrom``). A sample that fails (a proton moved, a bond broke in
the optimization, another RDKit atom order) is counted as ``topology_mismatch`` and left out.

``SampleSetTable.coverage`` has one row per pair-table row (rows in = rows out): how many samples
the shards hold for it, how many were ok, failed, mismatched and kept, and whether the pair is
covered. Pairs without samples stay in, marked ``covered = False``.

``supervision_for`` turns the sample sets of *training* pairs into ``PairSupervision``: the
contact map (per solute node × solvent node, the fraction of kept samples in contact), one 3D
graph per kept sample and ``decoys_per_sample`` decoys per sample (the same optimized molecules,
the solvent rigidly moved to another side of the solute at the sample's own closest-contact
distance: same atoms, same internal geometry, another arrangement), and the auxiliary targets.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pairfactory.errors import UserError
from pairfactory.ml.datasets import (
    AUX_TARGETS,
    COMPLEX_GRAPH_CUTOFF_ANGSTROM,
    AuxScale,
    PairSupervision,
)
from pairfactory.ml.sample_features import (
    QUALITY_COUNT_COLUMNS,
    SHARD_COLUMNS,
    QCSettings,
    energy_summary,
    flag_outliers,
    quality_counts,
)
from pairfactory.pairs.smiles import molecule_key
from pairfactory.qm.shards import open_dataset, system_id_for

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dgl

    from pairfactory.ml.graph_cache import GraphCache

log = logging.getLogger(__name__)

# Parquet metadata of a descriptor table built for some solvents only (a copy of
# qm.descriptors.SELECTED_SOLVENTS_ATTR: ml reads no qm module but the shard reader)
SELECTED_SOLVENTS_ATTR = "selected_solvents"
DECOY_MAX_TRIES = 50  # random rotations tried per decoy before it is given up

# Single-bond covalent radii (Å), Cordero et al., Dalton Trans. 2008, 2832; carbon sp3.
COVALENT_RADII_ANGSTROM: dict[int, float] = {
    1: 0.31, 5: 0.84, 6: 0.76, 7: 0.71, 8: 0.66, 9: 0.57, 11: 1.66, 14: 1.11, 15: 1.07,
    16: 1.05, 17: 1.02, 32: 1.20, 34: 1.20, 35: 1.20, 50: 1.39, 52: 1.38, 53: 1.39,
}  # fmt: skip

# Per pair-table row. n_samples = n_failed + n_qc_flagged + n_topology_mismatch + n_over_cap
# + n_kept (checked): every sample of the shards is either kept or counted with its reason.
COVERAGE_COLUMNS = (
    "pair_id",
    "system_id",
    *QUALITY_COUNT_COLUMNS,
    "n_topology_mismatch",
    "n_over_cap",
    "n_kept",
    "covered",
)
TOPOLOGY_MISMATCH = "topology_mismatch"


@dataclass(frozen=True)
class SampleSetSettings:
    """How samples become supervision (config ``evaluate.samples``)."""

    # covalent contact: distance < r_cov(a) + r_cov(b) + bond_tolerance_angstrom. Additive, not a
    # factor: 1.3 x the radii called the I...I of diiodomethane (3.60 Å) a bond.
    bond_tolerance_angstrom: float = 0.4
    # a solute node and a solvent node are in contact below this distance (heavy atoms: a
    # hydrogen bond O…O is ~2.8 Å, a van der Waals C…C contact ~3.7 Å)
    contact_cutoff_angstrom: float = 4.0
    decoys_per_sample: int = 2
    # keep at most this many samples per pair (lowest k first): the dose-response knob
    max_samples_per_pair: int | None = None
    # 3D graphs with hydrogens as nodes (else heavy atoms only)
    complex_hydrogens: bool = False
    # the fraction of training pairs whose samples are used (seeded choice): the coverage knob
    train_pair_fraction: float = 1.0
    seed: int = 0
    qc: QCSettings = field(default_factory=QCSettings)

    def __post_init__(self) -> None:
        if not 0 < self.bond_tolerance_angstrom < 1.0:
            raise UserError(
                "evaluate.samples.bond_tolerance_angstrom must be in (0, 1) Å, "
                f"got {self.bond_tolerance_angstrom}"
            )
        if not self.contact_cutoff_angstrom > 0:
            raise UserError(
                f"evaluate.samples.contact_cutoff_angstrom must be > 0, got "
                f"{self.contact_cutoff_angstrom}"
            )
        if self.decoys_per_sample < 0:
            raise UserError(
                f"evaluate.samples.decoys_per_sample must be >= 0, got {self.decoys_per_sample}"
            )
        if self.max_samples_per_pair is not None and self.max_samples_per_pair < 1:
            raise UserError(
                "evaluate.samples.max_samples_per_pair must be >= 1 or null, got "
                f"{self.max_samples_per_pair}"
            )
        if not 0.0 <= self.train_pair_fraction <= 1.0:
            raise UserError(
                "evaluate.samples.train_pair_fraction must be in [0, 1], got "
                f"{self.train_pair_fraction}"
            )


@dataclass
class SampleSet:
    """The kept samples of one system: atoms in the graphs' order (solute, then solvent copies)."""

    system_id: str
    solute_smiles: str
    solvent_smiles: str
    atomic_numbers: np.ndarray  # [n_atoms] int64
    fragment_index: np.ndarray  # [n_atoms] int64: 0 solute, 1.. solvent copies
    n_solute_nodes: int  # graph nodes of the solute = its first atoms
    n_solvent_nodes: int  # graph nodes of the solvent = the first atoms of each copy
    k: np.ndarray  # [n_samples] int64
    positions_angstrom: np.ndarray  # [n_samples, n_atoms, 3] float64
    interaction_energy_kcal_mol: np.ndarray  # [n_samples] float64

    def energy_summary(self) -> dict[str, float]:
        """Robust summaries of the kept samples' interaction energies (e_int_*_kcal_mol)."""
        return energy_summary(self.interaction_energy_kcal_mol)


@dataclass
class SampleSetTable:
    """Sample sets of a pair table: ``coverage`` (one row per pair-table row) and the kept
    ``sets`` by system id (systems with at least one kept sample)."""

    coverage: pd.DataFrame
    sets: dict[str, SampleSet] = field(repr=False)
    # (system id, graph settings) -> (contact map, complexes, decoys): built once per process
    _graphs: dict[tuple[str, str], tuple[Any, list[Any], list[Any]]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def sample_graphs(
        self, system_id: str, settings: SampleSetSettings
    ) -> tuple[np.ndarray | None, list[Any], list[Any]]:
        """The system's contact map, complex graphs and decoy graphs (none without samples).
        Nothing in them depends on the fold, so every fold of a table shares them."""
        key = (system_id, _graph_settings_key(settings))
        if key not in self._graphs:
            self._graphs[key] = _sample_graphs(self.sets.get(system_id), settings)
        return self._graphs[key]

    def summary(self) -> dict[str, int]:
        """Pairs, covered pairs, and the sample counts of COVERAGE_COLUMNS summed over systems
        (a system on several rows counts once)."""
        per_system = self.coverage.drop_duplicates("system_id")
        return {
            "pairs": int(len(self.coverage)),
            "covered_pairs": int(self.coverage["covered"].sum()),
            **{
                name.removeprefix("n_"): int(per_system[name].sum())
                for name in COVERAGE_COLUMNS[2:-1]
            },
        }


# ---------------------------------------------------------------------------------------------
# reading and proving


def read_samples(
    shards_dir: str | Path, system_ids: Iterable[str], columns: Iterable[str] = SHARD_COLUMNS
) -> pd.DataFrame:
    """The shard rows of ``system_ids`` (all statuses), the ``columns`` (default
    ``SHARD_COLUMNS``)."""
    import pyarrow.dataset as pads

    wanted = sorted(set(system_ids))
    dataset = open_dataset(shards_dir)
    table = dataset.to_table(columns=list(columns), filter=pads.field("system_id").isin(wanted))
    return table.to_pandas()


def graph_topology(smiles: str, graph: dgl.DGLGraph) -> tuple[np.ndarray, set[tuple[int, int]]]:
    """(atomic numbers of the graph's nodes, its bonds as pairs i < j) for a graph featurized from
    ``smiles``; the elements come from RDKit's parse of the same string (the featurizer's)."""
    from rdkit import Chem

    mol = Chem.MolFromSmiles(smiles)
    if mol is None or mol.GetNumAtoms() != graph.num_nodes():
        raise UserError(
            f"graph of {smiles!r} has {graph.num_nodes()} nodes but RDKit parses "
            f"{None if mol is None else mol.GetNumAtoms()} atoms: rebuild the graph cache"
        )
    numbers = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], dtype=np.int64)
    src, dst = (t.numpy() for t in graph.edges())
    bonds = {(int(min(a, b)), int(max(a, b))) for a, b in zip(src, dst, strict=True)}
    return numbers, bonds


def topology_problem(
    numbers: np.ndarray,
    bonds: set[tuple[int, int]],
    sample_numbers: np.ndarray,
    positions_angstrom: np.ndarray,
    bond_tolerance_angstrom: float,
) -> str | None:
    """Why the first ``len(numbers)`` atoms of a sample are not the graph's nodes, or None.

    Edge by edge: node i has the element of atom i, and nodes i, j are bonded in the graph exactly
    when atoms i, j are in covalent contact in the sample's geometry."""
    n = len(numbers)
    if len(sample_numbers) < n:
        return f"the sample has {len(sample_numbers)} atoms, the graph {n} nodes"
    if not np.array_equal(sample_numbers[:n], numbers):
        i = int(np.flatnonzero(sample_numbers[:n] != numbers)[0])
        return f"atom {i} is element {sample_numbers[i]}, graph node {i} is {numbers[i]}"
    radii = np.array([COVALENT_RADII_ANGSTROM.get(int(z), 1.5) for z in numbers])
    xyz = positions_angstrom[:n]
    distance = np.linalg.norm(xyz[:, None, :] - xyz[None, :, :], axis=-1)
    contact = distance < radii[:, None] + radii[None, :] + bond_tolerance_angstrom
    graph = np.zeros((n, n), dtype=bool)
    for i, j in bonds:
        graph[i, j] = graph[j, i] = True
    np.fill_diagonal(contact, False)
    differ = np.argwhere(np.triu(contact != graph, 1))
    if len(differ):
        i, j = (int(v) for v in differ[0])
        kind = "bonded in the graph but" if graph[i, j] else "not bonded in the graph but"
        return (
            f"atoms {i}-{j} are {kind} {distance[i, j]:.2f} Å apart ({len(differ)} pair(s) differ)"
        )
    return None


# The sample sets of the tables this process has read: a run of many folds (bench/reproduce.py,
# bench/select_hparams.py) reads and proves the shards once per table instead of once per fold.
_SAMPLE_SET_MEMO: dict[tuple[Any, ...], SampleSetTable] = {}
_SAMPLE_SET_MEMO_SIZE = 2


@functools.lru_cache(maxsize=8)  # asked once per system and fold, with one or two settings
def _graph_settings_key(settings: SampleSetSettings) -> str:
    """The settings that shape a system's graphs (not which training pairs get them)."""
    return json.dumps(
        {k: v for k, v in asdict(settings).items() if k != "train_pair_fraction"},
        sort_keys=True,
        default=str,
    )


def _memo_key(
    pairs_df: pd.DataFrame, shards_dir: str | Path | None, settings: SampleSetSettings
) -> tuple[Any, ...]:
    """Identifies a table's sample sets: the rows, every shard file (name, size, modification
    time: a rewritten shard is read again), the settings and the RDKit version of the proofs."""
    from rdkit import __version__ as rdkit_version

    rows = pd.util.hash_pandas_object(
        pairs_df[["pair_id", "solute_smiles", "solvent_smiles"]], index=False
    ).to_numpy()
    files: tuple[tuple[str, int, int], ...] = ()
    if shards_dir is not None:
        files = tuple(
            (str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns)
            for f in sorted(Path(shards_dir).glob("*.parquet"))
        )
    return (
        hashlib.sha256(rows.tobytes()).hexdigest(),
        files,
        _graph_settings_key(settings),
        rdkit_version,
    )


def sample_sets_for(
    pairs_df: pd.DataFrame,
    shards_dir: str | Path | None,
    cache: GraphCache,
    settings: SampleSetSettings = SampleSetSettings(),
) -> SampleSetTable:
    """``build_sample_sets``, remembered for the last tables of this process (same rows, shard
    files and settings: the same table)."""
    key = _memo_key(pairs_df.reset_index(drop=True), shards_dir, settings)
    if key not in _SAMPLE_SET_MEMO:
        while len(_SAMPLE_SET_MEMO) >= _SAMPLE_SET_MEMO_SIZE:
            _SAMPLE_SET_MEMO.pop(next(iter(_SAMPLE_SET_MEMO)))
        _SAMPLE_SET_MEMO[key] = build_sample_sets(pairs_df, shards_dir, cache, settings)
    else:
        log.info("sample sets: %s (read before in this process)", _SAMPLE_SET_MEMO[key].summary())
    return _SAMPLE_SET_MEMO[key]


def build_sample_sets(
    pairs_df: pd.DataFrame,
    shards_dir: str | Path | None,
    cache: GraphCache,
    settings: SampleSetSettings = SampleSetSettings(),
) -> SampleSetTable:
    """The sample sets of every row of ``pairs_df`` (``pair_id``, ``solute_smiles``,
    ``solvent_smiles``). ``shards_dir`` None: no samples at all (every pair uncovered)."""
    pairs_df = pairs_df.reset_index(drop=True)
    system_ids = [
        system_id_for(a, b)
        for a, b in zip(pairs_df["solute_smiles"], pairs_df["solvent_smiles"], strict=True)
    ]
    rows = (
        read_samples(shards_dir, system_ids)
        if shards_dir is not None
        else pd.DataFrame(columns=list(SHARD_COLUMNS))
    )
    by_system = {sid: part for sid, part in rows.groupby("system_id", sort=False)}
    sets: dict[str, SampleSet] = {}
    counts: dict[str, dict[str, int]] = {}
    for sid, solute, solvent in dict.fromkeys(
        zip(system_ids, pairs_df["solute_smiles"], pairs_df["solvent_smiles"], strict=True)
    ):
        part = by_system.get(sid)
        counts[sid], kept = _prove_system(sid, solute, solvent, part, cache, settings)
        if kept is not None:
            sets[sid] = kept
    coverage = pd.DataFrame(
        {
            "pair_id": pairs_df["pair_id"].to_numpy(),
            "system_id": system_ids,
            **{name: [counts[sid][name] for sid in system_ids] for name in COVERAGE_COLUMNS[2:-1]},
        }
    )
    coverage["covered"] = coverage["n_kept"] > 0
    if len(coverage) != len(pairs_df):  # rows in = rows out
        raise AssertionError(f"{len(pairs_df)} pairs in, {len(coverage)} coverage rows out")
    table = SampleSetTable(coverage=coverage[list(COVERAGE_COLUMNS)], sets=sets)
    log.info("sample sets: %s", table.summary())
    return table


def _prove_system(
    system_id: str,
    solute: str,
    solvent: str,
    part: pd.DataFrame | None,
    cache: GraphCache,
    settings: SampleSetSettings,
) -> tuple[dict[str, int], SampleSet | None]:
    names = COVERAGE_COLUMNS[2:-1]
    if part is None or part.empty:
        return dict.fromkeys(names, 0), None
    part = flag_outliers(part.sort_values("k"), settings.qc)
    solute_numbers, solute_bonds = graph_topology(solute, cache.get(solute))
    solvent_numbers, solvent_bonds = graph_topology(solvent, cache.get(solvent))
    kept_rows, mismatched = [], 0
    for record in part[part["used"]].itertuples(index=False):
        numbers = np.asarray(record.atomic_numbers, dtype=np.int64)
        fragments = np.asarray(record.fragment_index, dtype=np.int64)
        xyz = np.asarray(record.final_positions_angstrom, dtype=np.float64).reshape(-1, 3)
        problem = topology_problem(
            solute_numbers, solute_bonds, numbers[fragments == 0], xyz[fragments == 0],
            settings.bond_tolerance_angstrom,
        )  # fmt: skip
        for copy in sorted(set(fragments.tolist()) - {0}) if problem is None else ():
            problem = topology_problem(
                solvent_numbers, solvent_bonds, numbers[fragments == copy],
                xyz[fragments == copy], settings.bond_tolerance_angstrom,
            )  # fmt: skip
            if problem is not None:
                break
        if problem is not None:
            mismatched += 1
            log.debug("%s k=%d: %s: %s", system_id, record.k, TOPOLOGY_MISMATCH, problem)
            continue
        kept_rows.append((record, numbers, fragments, xyz))
    proven = len(kept_rows)
    if settings.max_samples_per_pair is not None:
        kept_rows = kept_rows[: settings.max_samples_per_pair]
    counts = {
        **quality_counts(part),
        "n_topology_mismatch": mismatched,
        "n_over_cap": proven - len(kept_rows),
        "n_kept": len(kept_rows),
    }
    accounted = sum(counts[n] for n in names if n not in ("n_samples", "n_ok"))
    if accounted != counts["n_samples"]:  # every sample kept or counted with its reason
        raise AssertionError(f"system {system_id}: {counts}")
    if not kept_rows:
        return counts, None
    first = kept_rows[0]
    for _, numbers, fragments, _ in kept_rows[1:]:
        if not (np.array_equal(numbers, first[1]) and np.array_equal(fragments, first[2])):
            raise UserError(
                f"system {system_id}: its samples hold different atoms; the shards mix settings "
                "(samples.n_solvent?) — give evaluate one engine tag's shards"
            )
    return counts, SampleSet(
        system_id=system_id,
        solute_smiles=solute,
        solvent_smiles=solvent,
        atomic_numbers=first[1],
        fragment_index=first[2],
        n_solute_nodes=len(solute_numbers),
        n_solvent_nodes=len(solvent_numbers),
        k=np.array([r.k for r, *_ in kept_rows], dtype=np.int64),
        positions_angstrom=np.stack([xyz for *_, xyz in kept_rows]),
        interaction_energy_kcal_mol=np.array(
            [r.interaction_energy_kcal_mol for r, *_ in kept_rows], dtype=np.float64
        ),
    )


# ---------------------------------------------------------------------------------------------
# supervision


def contact_map(sample_set: SampleSet, cutoff_angstrom: float) -> np.ndarray:
    """[solute nodes, solvent nodes]: the fraction of samples in which the two nodes are closer
    than ``cutoff_angstrom`` (in contact with any solvent copy)."""
    frag = sample_set.fragment_index
    solute = np.flatnonzero(frag == 0)[: sample_set.n_solute_nodes]
    xyz = sample_set.positions_angstrom
    touching = np.zeros((len(xyz), len(solute), sample_set.n_solvent_nodes), dtype=bool)
    for copy in sorted(set(frag.tolist()) - {0}):
        solvent = np.flatnonzero(frag == copy)[: sample_set.n_solvent_nodes]
        distance = np.linalg.norm(xyz[:, solute, None, :] - xyz[:, None, solvent, :], axis=-1)
        touching |= distance < cutoff_angstrom
    return touching.mean(axis=0).astype(np.float32)


def complex_graph(
    numbers: np.ndarray,
    fragments: np.ndarray,
    positions_angstrom: np.ndarray,
    cutoff_angstrom: float = COMPLEX_GRAPH_CUTOFF_ANGSTROM,
) -> dgl.DGLGraph:
    """A 3D graph of one arrangement: ``ndata`` z, fragment; ``edata`` distance_angstrom [E, 1]
    for every ordered atom pair closer than ``cutoff_angstrom``."""
    import dgl
    import torch

    distance = np.linalg.norm(positions_angstrom[:, None] - positions_angstrom[None], axis=-1)
    np.fill_diagonal(distance, np.inf)
    src, dst = np.nonzero(distance < cutoff_angstrom)
    graph = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=len(numbers))
    graph.ndata["z"] = torch.from_numpy(np.asarray(numbers, dtype=np.int64))
    graph.ndata["fragment"] = torch.from_numpy(np.asarray(fragments, dtype=np.int64))
    graph.edata["distance_angstrom"] = torch.from_numpy(
        distance[src, dst].astype(np.float32)
    ).reshape(-1, 1)
    return graph


def decoy_positions(
    numbers: np.ndarray,
    fragments: np.ndarray,
    positions_angstrom: np.ndarray,
    rng: np.random.Generator,
    max_tries: int = DECOY_MAX_TRIES,
) -> np.ndarray | None:
    """The sample's molecules with each solvent copy rigidly rotated about the solute's centroid
    (a uniform random rotation: a new side and orientation) and slid along the line to the
    centroid until its closest contact with the solute equals its own in the sample. Copies keep
    apart at least as far as the sample's closest pair of copies (a rotation that brings one
    nearer to a copy already placed is drawn again). None if no such place is found."""
    out = positions_angstrom.copy()
    solute = positions_angstrom[fragments == 0]
    centroid = solute.mean(axis=0)
    copies = sorted(set(fragments.tolist()) - {0})
    # measured on the sample itself, never on copies already moved
    targets = {
        copy: _min_distance(positions_angstrom[fragments == copy], solute) for copy in copies
    }
    copy_gap = min(
        (
            _min_distance(positions_angstrom[fragments == a], positions_angstrom[fragments == b])
            for a, b in itertools.combinations(copies, 2)
        ),
        default=0.0,
    )
    placed_mask = np.zeros(len(fragments), dtype=bool)
    for copy in copies:
        mask = fragments == copy
        placed = None
        for _ in range(max_tries):
            rotated = (out[mask] - centroid) @ _random_rotation(rng).T + centroid
            placed = _slide_to_contact(rotated, solute, centroid, targets[copy])
            if placed is None:
                continue
            if not placed_mask.any() or _min_distance(placed, out[placed_mask]) >= copy_gap - 1e-6:
                break
            placed = None
        if placed is None:
            return None
        out[mask] = placed
        placed_mask |= mask
    return out


def _min_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.linalg.norm(a[:, None] - b[None], axis=-1)))


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def _slide_to_contact(
    moving: np.ndarray, fixed: np.ndarray, centroid: np.ndarray, target_angstrom: float
) -> np.ndarray | None:
    """Move ``moving`` along the centroid→its-centre line, coming in from far out, to the first
    place where its closest contact with ``fixed`` reaches ``target_angstrom``.

    Closed form: atom a moved by t·d is at distance r from atom b where
    t = −(a−b)·d ± sqrt(((a−b)·d)² − |a−b|² + r²); the first contact from outside is the largest
    '+' root over all atom pairs that have one."""
    direction = moving.mean(axis=0) - centroid
    norm = np.linalg.norm(direction)
    if norm < 1e-8:
        return None
    direction /= norm
    delta = moving[:, None, :] - fixed[None, :, :]  # [n_moving, n_fixed, 3]
    along = delta @ direction
    discriminant = along**2 - np.einsum("ijk,ijk->ij", delta, delta) + target_angstrom**2
    if not (discriminant >= 0).any():
        return None
    t = np.max(-along[discriminant >= 0] + np.sqrt(discriminant[discriminant >= 0]))
    return moving + t * direction


def _rng_for(seed: int, system_id: str, k: int) -> np.random.Generator:
    digest = hashlib.sha256(f"decoys\x1f{seed}\x1f{system_id}\x1f{k}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def supervision_for(
    train_pairs: pd.DataFrame,
    table: SampleSetTable,
    settings: SampleSetSettings = SampleSetSettings(),
    descriptors: pd.DataFrame | None = None,
) -> dict[str, PairSupervision]:
    """pair_id -> PairSupervision for the rows of ``train_pairs`` (training fold only: callers
    must never pass validation or test rows). The auxiliary targets: the e_int_* summaries of the
    pair's kept samples, and the columns of ``descriptors`` (indexed by ``system_id``) named like
    ``AUX_TARGETS`` (the ALPB ΔG_solv); what is missing stays NaN."""
    system_ids = table.coverage.drop_duplicates("pair_id").set_index("pair_id")["system_id"]
    result: dict[str, PairSupervision] = {}
    per_system: dict[str, tuple[np.ndarray | None, list[Any], list[Any], np.ndarray]] = {}
    for pair_id, solute, solvent in zip(
        train_pairs["pair_id"], train_pairs["solute_smiles"], train_pairs["solvent_smiles"],
        strict=True,
    ):  # fmt: skip
        sid = system_ids.get(pair_id) or system_id_for(solute, solvent)
        if sid not in per_system:
            sample_set = table.sets.get(sid)
            summary = sample_set.energy_summary() if sample_set is not None else {}
            row = (
                descriptors.loc[sid]
                if descriptors is not None and sid in descriptors.index
                else None
            )
            aux = np.array(
                [
                    summary.get(name, row[name] if row is not None and name in row else np.nan)
                    for name in AUX_TARGETS
                ],
                dtype=np.float32,
            )
            per_system[sid] = (*table.sample_graphs(sid, settings), aux)
        contacts, complexes, decoys, aux = per_system[sid]
        result[pair_id] = PairSupervision(
            aux_targets=aux.copy(), contact_map=contacts, complexes=complexes, decoys=decoys
        )
    return result


def _sample_graphs(
    sample_set: SampleSet | None, settings: SampleSetSettings
) -> tuple[np.ndarray | None, list[Any], list[Any]]:
    if sample_set is None:
        return None, [], []
    keep = (
        np.ones(len(sample_set.atomic_numbers), dtype=bool)
        if settings.complex_hydrogens
        else sample_set.atomic_numbers != 1
    )
    numbers, fragments = sample_set.atomic_numbers[keep], sample_set.fragment_index[keep]
    complexes, decoys = [], []
    for k, xyz in zip(sample_set.k, sample_set.positions_angstrom, strict=True):
        complexes.append(complex_graph(numbers, fragments, xyz[keep]))
        rng = _rng_for(settings.seed, sample_set.system_id, int(k))
        for _ in range(settings.decoys_per_sample):
            moved = decoy_positions(sample_set.atomic_numbers, sample_set.fragment_index, xyz, rng)
            if moved is not None:
                decoys.append(complex_graph(numbers, fragments, moved[keep]))
    return contact_map(sample_set, settings.contact_cutoff_angstrom), complexes, decoys


# ---------------------------------------------------------------------------------------------
# one fold


@dataclass
class FoldSamples:
    """What a fold of the protocol gets from the samples: the training pairs' supervision, and
    per pair-table row whether it is covered (for reporting test errors separately)."""

    supervision: dict[str, PairSupervision]
    covered: pd.Series  # pair_id -> bool, every row of the table
    summary: dict[str, Any]


def fold_samples(
    table: pd.DataFrame,
    train_rows: np.ndarray,
    shards_dir: str | Path,
    cache: GraphCache,
    settings: SampleSetSettings,
    descriptors_path: str | Path | None = None,
    with_supervision: bool = True,
    extra_descriptors_path: str | Path | None = None,
) -> FoldSamples:
    """Sample sets of the whole table (coverage only) and supervision for a seeded
    ``train_pair_fraction`` of the training rows ``train_rows`` (positions in ``table``). No
    validation or test row ever gets supervision: the leakage rule of the protocol.
    ``extra_descriptors_path``: the descriptor table of the extra training pairs' dataset, read
    together with ``descriptors_path`` (``read_descriptors``)."""
    sets = sample_sets_for(table, shards_dir, cache, settings)
    covered = sets.coverage.set_index("pair_id")["covered"]
    train = table.iloc[np.asarray(train_rows, dtype=np.int64)]
    chosen = train
    if settings.train_pair_fraction < 1.0:
        rng = np.random.default_rng(settings.seed)
        n = int(round(settings.train_pair_fraction * len(train)))
        chosen = train.iloc[np.sort(rng.choice(len(train), size=n, replace=False))]
    descriptors = None
    # a model that learns nothing from the samples reads no auxiliary target either
    if not with_supervision:
        descriptors_path = None
    if descriptors_path is not None:
        more = () if extra_descriptors_path is None else (extra_descriptors_path,)
        descriptors = read_descriptors(descriptors_path, *more)
    supervision = supervision_for(chosen, sets, settings, descriptors) if with_supervision else {}
    aux_scale = standardize_aux_targets(supervision)
    n_complexes = sum(len(s.complexes) for s in supervision.values())
    n_decoys = sum(len(s.decoys) for s in supervision.values())
    n_requested = n_complexes * settings.decoys_per_sample
    if n_decoys < n_requested:
        log.warning(
            "%d of %d decoys could not be placed (in %d random rotations none put every "
            "solvent copy at its own contact with the solute without coming closer to another "
            "copy than the sample's copies are); the contrastive term sees fewer negatives for "
            "those samples",
            n_requested - n_decoys,
            n_requested,
            DECOY_MAX_TRIES,
        )
    aux_rows = [s.aux_targets for s in supervision.values() if s.aux_targets is not None]
    summary = {
        **sets.summary(),
        "settings": asdict(settings),
        "descriptors": None if descriptors_path is None else str(descriptors_path),
        "train_pairs": int(len(train)),
        "train_pairs_supervised": int(len(supervision)),
        "train_pairs_with_samples": int(sum(1 for s in supervision.values() if s.complexes)),
        "train_complexes": int(n_complexes),
        "train_decoys": int(n_decoys),
        "train_decoys_requested": int(n_requested),
        "train_pairs_with_decoys": int(sum(1 for s in supervision.values() if s.decoys)),
        # training pairs with a value of each auxiliary target (ALPB needs a parametrized solvent)
        "train_pairs_with_aux_target": {
            name: int(sum(np.isfinite(row[i]) for row in aux_rows))
            for i, name in enumerate(AUX_TARGETS)
        },
        "aux_targets": {
            name: {"mean": float(m), "std": float(s)}
            for name, m, s in zip(AUX_TARGETS, aux_scale.mean, aux_scale.std, strict=True)
        },
    }
    return FoldSamples(supervision=supervision, covered=covered, summary=summary)


def standardize_aux_targets(supervision: Mapping[str, PairSupervision]) -> AuxScale:
    """Standardize every pair's auxiliary targets in place with the mean and std of the pairs
    given (the training pairs: the scale of an auxiliary target comes from the training fold)."""
    rows = [s.aux_targets for s in supervision.values() if s.aux_targets is not None]
    scale = AuxScale.fit(np.stack(rows) if rows else np.empty((0, len(AUX_TARGETS))))
    for s in supervision.values():
        if s.aux_targets is not None:
            s.aux_targets = scale.apply(s.aux_targets)
    return scale


def read_descriptors(path: str | Path, *more: str | Path) -> pd.DataFrame:
    """A per-system descriptor table (Parquet: ``system_id`` + columns named like AUX_TARGETS),
    indexed by system id. With ``more`` tables (an extra pair table's, beside the dataset's), their
    systems are added; a system two tables share must have the same values in both (they came from
    one QM engine and xtb version), else the tables cannot be read together."""
    # a copy: the frame read is shared by every reader of that file version in this process
    merged = _read_descriptor_table(Path(path)).copy()
    for other_path in more:
        other = _read_descriptor_table(Path(other_path))
        shared = merged.index.intersection(other.index)
        columns = [
            c
            for c in merged.columns.intersection(other.columns)
            if pd.api.types.is_float_dtype(merged[c]) and pd.api.types.is_float_dtype(other[c])
        ]
        if len(shared) and columns:
            a = merged.loc[shared, columns].to_numpy(dtype=np.float64)
            b = other.loc[shared, columns].to_numpy(dtype=np.float64)
            differ = ~np.isclose(a, b, rtol=0.0, atol=1e-6, equal_nan=True).all(axis=1)
            if differ.any():
                first = shared[int(np.argmax(differ))]
                raise UserError(
                    f"descriptor tables {path} and {other_path} give different values for "
                    f"{int(differ.sum())} of the {len(shared)} systems they share (e.g. "
                    f"{first}), or a value in one and none in the other: were they made with "
                    "other QM engines or xtb versions, or did a run fail in one of them? Build "
                    "both with the same config (`pairfactory solvation --config ...`)"
                )
        merged = pd.concat([merged, other.loc[other.index.difference(merged.index)]])
    return merged


def descriptor_table_solvents(path: str | Path) -> list[str]:
    """The solvents a descriptor table was built for (`pairfactory solvation --solvent`: the
    table of a dataset read only for its extra pairs in those solvents); empty: every system."""
    return list(_read_descriptor_table(Path(path)).attrs.get(SELECTED_SOLVENTS_ATTR, []))


def require_every_solvent(path: str | Path, table: pd.DataFrame) -> None:
    """A table's own descriptor table must hold every solvent of its pairs: one built for some
    solvents only would leave the others' values missing, with no error."""
    solvents = descriptor_table_solvents(path)
    if not solvents:
        return
    wanted = {molecule_key(s) for s in solvents}
    outside = table["solvent_smiles"].map(lambda s: molecule_key(str(s)) not in wanted)
    if outside.any():
        raise UserError(
            f"descriptor table {path} holds only the systems in solvent(s) {', '.join(solvents)} "
            f"(built with `pairfactory solvation --solvent`, as for extra pairs), but "
            f"{int(outside.sum())} of the {len(table)} pairs are in other solvents; build the "
            "table's own descriptors without --solvent"
        )


def _read_descriptor_table(path: Path) -> pd.DataFrame:
    if not path.is_file():
        raise UserError(
            f"descriptor table {path} not found; compute it with `pairfactory solvation`"
        )
    stat = path.stat()  # the inode too: a table rewritten by atomic_write is a new file
    key = (path.resolve(), stat.st_ino, stat.st_mtime_ns, stat.st_size)
    return _read_table_version(key, path)


@functools.lru_cache(maxsize=4)
def _read_table_version(key: tuple[Path, int, int, int], path: Path) -> pd.DataFrame:
    """One version of a descriptor table (``key``: resolved path, inode, mtime, size), read once
    per process: a protocol run reads it for every fold, and a final model for its inputs, its
    samples and its engine check. ``path``: as the user gave it, for messages."""
    frame = pd.read_parquet(path)
    if "system_id" not in frame.columns:
        raise UserError(
            f"descriptor table {path} has no system_id column (columns: "
            f"{', '.join(map(str, frame.columns))}); rebuild it with `pairfactory solvation`"
        )
    indexed = frame.drop_duplicates("system_id").set_index("system_id")
    indexed.attrs = dict(frame.attrs)  # which solvents it holds (SELECTED_SOLVENTS_ATTR)
    return indexed


def descriptor_inputs(
    pairs_df: pd.DataFrame, descriptors: pd.DataFrame, names: Sequence[str]
) -> np.ndarray:
    """[len(pairs_df), len(names)] float32: each row's values of the descriptor columns ``names``
    (``descriptors`` from ``read_descriptors``, matched by system id), NaN where there is none: an
    unparametrized solvent, a failed calculation, or a pair the table lacks (logged, with the
    count: the model then reads it as missing, as it would a failed calculation)."""
    absent = [name for name in names if name not in descriptors.columns]
    if absent:
        raise UserError(
            f"the descriptor table has no column(s) {absent}; rebuild it with "
            "`pairfactory solvation`"
        )
    system_ids = pd.Index(
        [
            system_id_for(a, b)
            for a, b in zip(pairs_df["solute_smiles"], pairs_df["solvent_smiles"], strict=True)
        ]
    )
    unknown = ~system_ids.isin(descriptors.index)
    if unknown.any():
        log.warning(
            "%d of %d pairs have no row in the descriptor table: their %s are missing values",
            int(unknown.sum()),
            len(system_ids),
            ", ".join(names),
        )
    values = descriptors.reindex(system_ids)[list(names)].to_numpy(dtype=np.float64)
    return values.astype(np.float32)
