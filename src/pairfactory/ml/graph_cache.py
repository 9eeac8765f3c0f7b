"""The on-disk graph cache: each unique canonical SMILES featurized once, kept between runs.

The file is a ``torch.save`` of plain tensors, lists and strings (loaded with
``weights_only=True``, so no pickled code), stamped with ``FEATURE_SPEC_HASH``: a cache written
with other features is ignored and rebuilt.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pairfactory.fileio import atomic_write
from pairfactory.ml.featurize import (
    ATOM_FEATURE_DIM,
    ATOM_FEATURE_NAMES,
    BOND_FEATURE_DIM,
    BOND_FEATURE_NAMES,
    FEATURE_SPEC_HASH,
    FeaturizationError,
    canonical_smiles,
    featurize_smiles,
)

if TYPE_CHECKING:  # pragma: no cover - typing only
    import dgl
    import torch

log = logging.getLogger(__name__)

# Where the workflow and the CLI keep the cache unless told otherwise.
DEFAULT_GRAPH_CACHE = Path("results/graphs/graph_cache.pt")

_CACHE_FORMAT = 1


def rdkit_version() -> str:
    from rdkit import __version__

    return str(__version__)


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

    def featurize_all(
        self, smiles: Iterable[str], desc: str = "featurize", progress: bool = True
    ) -> dict[str, str]:
        """Featurize every unique SMILES (tqdm bar from 200 SMILES on, unless ``progress`` is
        False); returns {SMILES: reason} of the failures."""
        from tqdm import tqdm

        unique = list(dict.fromkeys(smiles))
        failed: dict[str, str] = {}
        bar = tqdm(
            unique,
            desc=desc,
            unit="mol",
            mininterval=1.0,
            disable=not progress or len(unique) < 200,
        )
        for s in bar:
            try:
                self.get(s)
            except FeaturizationError as err:
                failed[s] = err.problem
        log.info(
            "featurized %d unique SMILES (%d failed); cache holds %d graphs",
            len(unique),
            len(failed),
            len(self._graphs),
        )
        return failed

    # -- disk ---------------------------------------------------------------------------------

    def _load(self, path: Path) -> None:
        import dgl
        import torch

        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            if (
                payload.get("format") != _CACHE_FORMAT
                or payload.get("spec_hash") != FEATURE_SPEC_HASH
                # another RDKit may perceive aromaticity, stereo or atom order differently, and
                # the samples' atoms are matched to the graphs' nodes by that order
                or payload.get("rdkit_version") != rdkit_version()
            ):
                log.warning(
                    "graph cache %s was written with other features or RDKit (spec %s, RDKit %s; "
                    "now %s, %s): rebuilding it",
                    path,
                    payload.get("spec_hash"),
                    payload.get("rdkit_version"),
                    FEATURE_SPEC_HASH,
                    rdkit_version(),
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
        for key, n, h, e, s, d in zip(
            smiles, n_nodes, h_parts, e_parts, src_parts, dst_parts, strict=True
        ):
            g = dgl.graph((s, d), num_nodes=n)
            g.ndata["h"] = h
            g.edata["e"] = e
            graphs[key] = g
        self._graphs.update(graphs)
        self._failures.update(payload.get("failures", {}))
        self._alias.update(payload.get("aliases", {}))
        log.info(
            "graph cache %s: loaded %d graphs, %d known failures",
            path,
            len(graphs),
            len(self._failures),
        )

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
            "rdkit_version": rdkit_version(),
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


def _cat(
    parts: list[torch.Tensor], empty_shape: tuple[int, ...], dtype: torch.dtype
) -> torch.Tensor:
    import torch

    return torch.cat(parts).to(dtype) if parts else torch.zeros(empty_shape, dtype=dtype)
