"""Featurized solute–solvent pairs for training: the dataset, the batch and its collate function.

A ``PairGraphDataset`` reports every row of a pair table it cannot use (``rejected``) instead of
dropping it, so kept + rejected always equals the rows given.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

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


@dataclass
class PairItem:
    """One featurized pair; ``index`` is its 0-based row position in the pair table given."""

    solute: dgl.DGLGraph
    solvent: dgl.DGLGraph
    y: float
    index: int


@dataclass
class PairBatch:
    """A mini-batch of pairs: two batched graphs, targets ``y`` [B], row positions ``index`` [B]."""

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
            items.append(PairItem(self.cache.get(solute), self.cache.get(solvent), float(y), row))
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
