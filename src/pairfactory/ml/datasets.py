"""Featurized solute–solvent pairs for training: the dataset, the batch and its collate function.

A ``PairGraphDataset`` reports every row of a pair table it cannot use (``rejected``) instead of
dropping it, so kept + rejected always equals the rows given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from pairfactory.errors import UserError
from pairfactory.ml.featurize import FeaturizationError
from pairfactory.ml.graph_cache import GraphCache

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dgl
    import pandas as pd
    import torch

log = logging.getLogger(__name__)

SOLUTE_COLUMN = "solute_smiles"
SOLVENT_COLUMN = "solvent_smiles"
REJECT_COLUMNS = ("row", "pair_id", "solute_smiles", "solvent_smiles", "reason", "detail")
# The auxiliary physics targets a training pair may carry, in this order (PairSupervision): the
# implicit-solvent free energy of solvation of the solute (GFN2-xTB/ALPB, xtb program) and robust
# summaries of the interaction energies of its kept QM samples.
AUX_TARGETS: tuple[str, ...] = (
    "dg_solv_alpb_kcal_mol",
    "e_int_min_kcal_mol",
    "e_int_median_kcal_mol",
)
# Hyper-parameters that make a model read per-pair inputs besides the two graphs (all off by
# default), and the descriptor columns each switches on: ``PairItem.inputs``, in this order. Unlike
# an auxiliary target, an input is read at inference too.
INPUT_SWITCHES: dict[str, tuple[str, ...]] = {"alpb_input": ("dg_solv_alpb_kcal_mol",)}
# Distance up to which two atoms of a sample complex are joined by an edge of its 3D graph.
COMPLEX_GRAPH_CUTOFF_ANGSTROM = 5.0


def input_names_for(hparams: Mapping[str, Any]) -> tuple[str, ...]:
    """The per-pair inputs a model built with ``hparams`` reads (``INPUT_SWITCHES``)."""
    return tuple(
        name for switch, names in INPUT_SWITCHES.items() if hparams.get(switch) for name in names
    )


@dataclass
class PairSupervision:
    """What a *training* pair's QM samples and descriptors add to its label.

    Built from the training fold only (``pairfactory.ml.sample_sets``); validation and test pairs
    never carry one, so nothing of theirs reaches a loss. Every part may be absent:

    - ``aux_targets`` [len(AUX_TARGETS)] float32, raw units, NaN where missing (no samples, an
      unparametrized solvent); standardized with training-fold statistics by ``AuxScale``;
    - ``contact_map`` [n_solute_nodes, n_solvent_nodes] float32: the fraction of the pair's kept
      samples in which graph atom i of the solute is in contact with atom j of any solvent copy;
      rows and columns follow the graphs' node order (proven atom by atom, see sample_sets);
    - ``complexes``: one DGL graph per kept sample (the optimized complex), and ``decoys``: graphs
      with exactly the same nodes (same composition) in arrangements the optimizer did not reach.
      Node data ``z`` (int64 atomic number), ``fragment`` (int64: 0 solute, 1.. solvent copy);
      edge data ``distance_angstrom`` [E, 1] (float32), both directions, for every atom pair
      closer than ``COMPLEX_GRAPH_CUTOFF_ANGSTROM``.
    """

    aux_targets: np.ndarray | None = None
    contact_map: np.ndarray | None = None
    complexes: list[dgl.DGLGraph] = field(default_factory=list)
    decoys: list[dgl.DGLGraph] = field(default_factory=list)
    _batched: dict[str, dgl.DGLGraph] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def batched(self, kind: str) -> dgl.DGLGraph:
        """The pair's ``complexes`` or ``decoys`` as one batched graph, built on first use and
        kept: a training epoch then batches one graph per pair and kind instead of one per sample
        (``bench/probpair_epoch.py``: ProbPair's epoch 3.05 s -> 2.69 s, docs/results.md)."""
        import dgl

        if kind not in ("complexes", "decoys"):
            raise ValueError(f"kind must be 'complexes' or 'decoys', not {kind!r}")
        if kind not in self._batched:
            self._batched[kind] = dgl.batch(getattr(self, kind))
        return self._batched[kind]


@dataclass
class AuxScale:
    """Mean and standard deviation of each auxiliary target over the training pairs that have it."""

    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def fit(cls, targets: np.ndarray) -> AuxScale:
        """``targets`` [N, A] with NaN for missing values; a target seen fewer than twice gets
        mean 0 and std 1 (it is then masked out by its NaNs anyway)."""
        targets = np.asarray(targets, dtype=np.float64)
        targets = targets.reshape(-1, 1) if targets.ndim == 1 else targets
        seen = np.isfinite(targets)
        counts = seen.sum(axis=0)
        values = np.where(seen, targets, 0.0)
        mean = values.sum(axis=0) / np.maximum(counts, 1)
        variance = (np.where(seen, targets - mean, 0.0) ** 2).sum(axis=0) / np.maximum(counts, 1)
        std = np.where(counts > 1, np.sqrt(variance), 1.0)
        std = np.where(std > 1e-8, std, 1.0)
        return cls(mean=mean.astype(np.float32), std=std.astype(np.float32))

    def apply(self, targets: np.ndarray) -> np.ndarray:
        return ((np.asarray(targets, dtype=np.float32) - self.mean) / self.std).astype(np.float32)


@dataclass
class PairItem:
    """One featurized pair; ``index`` is its 0-based row position in the pair table given;
    ``inputs`` the per-pair values a model reads besides the graphs (``PairModel.input_names``,
    raw units, NaN where missing), known at inference as in training."""

    solute: dgl.DGLGraph
    solvent: dgl.DGLGraph
    y: float
    index: int
    supervision: PairSupervision | None = None
    inputs: np.ndarray | None = None


@dataclass
class BatchSupervision:
    """The supervision of a batch's pairs (``None`` parts where no pair of the batch has one).

    - ``aux_targets`` [B, A] standardized (0 where missing), ``aux_mask`` [B, A] bool;
    - ``contact_maps`` [B, M_solute, M_solvent] in the padded node layout of the batched graphs
      (``layers.NodeLayout``), ``contact_mask`` [B, M_solute, M_solvent] bool: True where the pair
      has a map and both nodes exist;
    - ``complexes`` / ``decoys``: batched DGL graphs of every pair's samples and decoys, with
      ``complex_pair`` / ``decoy_pair`` [n] the batch position of the pair each graph belongs to.
    """

    aux_targets: torch.Tensor | None = None
    aux_mask: torch.Tensor | None = None
    contact_maps: torch.Tensor | None = None
    contact_mask: torch.Tensor | None = None
    complexes: dgl.DGLGraph | None = None
    complex_pair: torch.Tensor | None = None
    decoys: dgl.DGLGraph | None = None
    decoy_pair: torch.Tensor | None = None

    def to(self, device: torch.device | str) -> BatchSupervision:
        return BatchSupervision(
            **{
                name: (value.to(device) if value is not None else None)
                for name, value in self.__dict__.items()
            }
        )


@dataclass
class PairBatch:
    """A mini-batch of pairs: two batched graphs, targets ``y`` [B], row positions ``index`` [B],
    the training pairs' ``supervision`` (``None`` in validation, test and inference) and the
    pairs' ``inputs`` [B, k] (float32, NaN where missing; ``None`` for a model that reads none)."""

    solute: dgl.DGLGraph
    solvent: dgl.DGLGraph
    y: torch.Tensor
    index: torch.Tensor
    supervision: BatchSupervision | None = None
    inputs: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> PairBatch:
        return PairBatch(
            solute=self.solute.to(device),
            solvent=self.solvent.to(device),
            y=self.y.to(device),
            index=self.index.to(device),
            supervision=None if self.supervision is None else self.supervision.to(device),
            inputs=None if self.inputs is None else self.inputs.to(device),
        )


def collate_pairs(batch: Sequence[PairItem], with_supervision: bool = True) -> PairBatch:
    """Batch ``PairItem``s (use as ``DataLoader(..., collate_fn=collate_pairs)``); evaluation
    passes ``with_supervision=False`` so the training pairs' sample graphs are not batched."""
    import dgl
    import torch

    if len(batch) == 0:
        raise ValueError("collate_pairs: empty batch")
    with_inputs = [item.inputs is not None for item in batch]
    if any(with_inputs) and not all(with_inputs):
        raise ValueError("collate_pairs: some pairs of the batch have inputs and some do not")
    return PairBatch(
        solute=dgl.batch([item.solute for item in batch]),
        solvent=dgl.batch([item.solvent for item in batch]),
        y=torch.tensor([item.y for item in batch], dtype=torch.float32),
        index=torch.tensor([item.index for item in batch], dtype=torch.int64),
        supervision=collate_supervision(batch) if with_supervision else None,
        inputs=(
            torch.from_numpy(np.stack([item.inputs for item in batch]).astype(np.float32))
            if all(with_inputs)
            else None
        ),
    )


def collate_supervision(batch: Sequence[PairItem]) -> BatchSupervision | None:
    """The batch's supervision; ``aux_targets`` of the items must already be standardized."""
    import dgl
    import torch

    parts = [item.supervision for item in batch]
    if all(p is None for p in parts):
        return None
    out = BatchSupervision()
    widths = {len(p.aux_targets) for p in parts if p is not None and p.aux_targets is not None}
    if widths:
        if len(widths) != 1:
            raise ValueError(f"collate_pairs: auxiliary targets of different lengths {widths}")
        width = widths.pop()
        values = np.full((len(batch), width), np.nan, dtype=np.float32)
        for b, p in enumerate(parts):
            if p is not None and p.aux_targets is not None:
                values[b] = p.aux_targets
        mask = np.isfinite(values)
        out.aux_targets = torch.from_numpy(np.where(mask, values, 0.0).astype(np.float32))
        out.aux_mask = torch.from_numpy(mask)
    if any(p is not None and p.contact_map is not None for p in parts):
        n_solute = [item.solute.num_nodes() for item in batch]
        n_solvent = [item.solvent.num_nodes() for item in batch]
        maps = torch.zeros(len(batch), max(n_solute), max(n_solvent))
        mask = torch.zeros(len(batch), max(n_solute), max(n_solvent), dtype=torch.bool)
        for b, p in enumerate(parts):
            if p is None or p.contact_map is None:
                continue
            if p.contact_map.shape != (n_solute[b], n_solvent[b]):
                raise ValueError(
                    f"collate_pairs: contact map {p.contact_map.shape} of pair {batch[b].index} "
                    f"does not match its graphs ({n_solute[b]}, {n_solvent[b]})"
                )
            maps[b, : n_solute[b], : n_solvent[b]] = torch.from_numpy(p.contact_map)
            mask[b, : n_solute[b], : n_solvent[b]] = True
        out.contact_maps, out.contact_mask = maps, mask
    for kind in ("complexes", "decoys"):
        # each pair's graphs come batched already; batching those keeps every graph apart
        with_graphs = [(b, p) for b, p in enumerate(parts) if p is not None and getattr(p, kind)]
        if with_graphs:
            setattr(out, kind, dgl.batch([p.batched(kind) for _, p in with_graphs]))
            owners = torch.repeat_interleave(
                torch.tensor([b for b, _ in with_graphs], dtype=torch.int64),
                torch.tensor([len(getattr(p, kind)) for _, p in with_graphs], dtype=torch.int64),
            )
            setattr(out, "complex_pair" if kind == "complexes" else "decoy_pair", owners)
    return out


@dataclass
class PairGraphDataset:
    """Featurized pairs of a pair table; rows that cannot be used are reported in ``rejected``.

    ``pairs_df`` needs ``solute_smiles``, ``solvent_smiles`` and ``target_column``. A row is
    rejected (reason ``solute_unfeaturizable``, ``solvent_unfeaturizable`` or ``missing_target``)
    instead of being dropped silently; ``len(pairs_df) == len(dataset) + len(dataset.rejected)``
    always holds. ``dataset[i].index`` is the row position (0-based, ``iloc``) in ``pairs_df``;
    ``inputs`` [len(pairs_df), k], if given, holds each row's model inputs (``PairItem.inputs``).
    """

    pairs_df: pd.DataFrame = field(repr=False)
    cache: GraphCache
    target_column: str = "value"
    # pair_id -> what the pair's samples add (training folds only; see PairSupervision)
    supervision: Mapping[str, PairSupervision] | None = field(default=None, repr=False)
    inputs: np.ndarray | None = field(default=None, repr=False)
    items: list[PairItem] = field(init=False, repr=False)
    rejected: pd.DataFrame = field(init=False, repr=False)

    def __post_init__(self) -> None:
        import pandas as pd

        missing = [
            c
            for c in (SOLUTE_COLUMN, SOLVENT_COLUMN, self.target_column)
            if c not in self.pairs_df.columns
        ]
        if missing:
            raise UserError(
                f"pair table lacks column(s) {missing}; it has {list(self.pairs_df.columns)}. "
                "Pass a pair table written by `pairfactory pairs` or set target_column."
            )
        df = self.pairs_df
        if self.inputs is not None and (self.inputs.ndim != 2 or len(self.inputs) != len(df)):
            raise ValueError(
                f"inputs of shape {self.inputs.shape} do not have one row per pair ({len(df)})"
            )
        pair_ids = df["pair_id"].tolist() if "pair_id" in df.columns else [None] * len(df)
        solutes = df[SOLUTE_COLUMN].tolist()
        solvents = df[SOLVENT_COLUMN].tolist()
        targets = df[self.target_column].tolist()
        self.cache.featurize_all(list(solutes) + list(solvents), desc="featurize pairs")

        items: list[PairItem] = []
        rejects: list[dict[str, Any]] = []
        for row, (pid, solute, solvent, y) in enumerate(
            zip(pair_ids, solutes, solvents, targets, strict=True)
        ):
            problem = self._problem(solute, solvent, y)
            if problem is not None:
                reason, detail = problem
                rejects.append(
                    {
                        "row": row,
                        "pair_id": pid,
                        "solute_smiles": solute,
                        "solvent_smiles": solvent,
                        "reason": reason,
                        "detail": detail,
                    }
                )
                continue
            extra = None if self.supervision is None else self.supervision.get(pid)
            items.append(
                PairItem(
                    self.cache.get(solute),
                    self.cache.get(solvent),
                    float(y),
                    row,
                    extra,
                    None if self.inputs is None else self.inputs[row],
                )
            )
        self.items = items
        self.rejected = pd.DataFrame(rejects, columns=list(REJECT_COLUMNS))
        if len(items) + len(self.rejected) != len(df):  # reconciliation: nothing lost
            raise AssertionError(
                f"{len(items)} kept + {len(self.rejected)} rejected != {len(df)} rows"
            )
        if len(self.rejected):
            log.warning(
                "%d of %d pairs rejected: %s",
                len(self.rejected),
                len(df),
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
