"""Building blocks shared by the pair models: the output record, padded node layouts, the
CIGIN/CGIB message-passing encoder, the solute–solvent interaction map, the MLP head and the
CIGIN backbone that CGIB builds on.

Everything works on DGL *batched* graphs and never loops over pairs in Python: per-pair work
(the interaction map, per-graph statistics) runs on padded ``[B, max_nodes, D]`` tensors with
masks built from ``batch_num_nodes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import dgl
import torch
import torch.nn.functional as F
from dgl.nn import Set2Set
from torch import nn

from pairfactory.ml.datasets import input_names_for


@dataclass
class ModelOutput:
    """What every pair model returns.

    ``prediction`` [B]; ``aux_loss`` a scalar added to the MSE (zero for models without one);
    ``aux`` detached tensors for logging and analysis (interaction maps, KL, keep rates, ...).
    The training loss is ``mse(prediction, y) + aux_loss`` (see ``loss``).
    """

    prediction: torch.Tensor
    aux_loss: torch.Tensor
    aux: dict[str, torch.Tensor] = field(default_factory=dict)
    # Predictive variance [B] in the units the model is trained in (standardized targets when
    # standardize_targets is on); None for point-prediction models.
    variance: torch.Tensor | None = None

    def loss(self, y: torch.Tensor) -> torch.Tensor:
        prediction = self.prediction.reshape(-1)
        return F.mse_loss(prediction, y.reshape(-1).to(prediction.dtype)) + self.aux_loss


class PairModel(nn.Module):
    """Base class: ``forward(solute_bg, solvent_bg) -> ModelOutput``; ``hparams`` records the
    constructor arguments (for metrics files and to rebuild the model from a checkpoint). A model
    that also reads per-pair values (``input_names``) takes them as a third argument ``inputs``.

    ``training_loss`` is what the trainer minimizes. The default is ``mse(prediction, y) +
    aux_loss``; a model that learns from the training pairs' samples overrides it and reads
    ``batch.supervision`` there. Inference never sees a batch's supervision: ``forward`` takes the
    two graphs (and the pair's inputs, for a model that reads any), never the samples.
    """

    hparams: dict[str, object]

    def forward(
        self, solute_bg: dgl.DGLGraph, solvent_bg: dgl.DGLGraph
    ) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def training_loss(
        self, output: ModelOutput, batch: Any, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """(loss to minimize, its named terms for the learning curve); ``y`` is scaled like the
        model's outputs."""
        return output.loss(y), {}

    def forward_batch(self, batch: Any) -> ModelOutput:
        """``forward`` on a ``PairBatch``, given the batch's inputs where the model reads any."""
        if self.input_names(self.hparams):
            return self(batch.solute, batch.solvent, batch.inputs)
        return self(batch.solute, batch.solvent)

    @staticmethod
    def input_names(hparams: Mapping[str, Any]) -> tuple[str, ...]:
        """The per-pair values besides the two graphs that the model built from ``hparams``
        reads (descriptor columns such as ``dg_solv_alpb_kcal_mol``, ``INPUT_SWITCHES``):
        ``forward``'s ``inputs`` [B, k] in this order, raw units, NaN where missing."""
        return input_names_for(hparams)

    @classmethod
    def inert_hparams(cls, hparams: Mapping[str, Any]) -> frozenset[str]:
        """The names among ``hparams`` (all of a model's constructor arguments) whose values
        cannot change the model the others build: two settings differing only in them are one
        model, and reports label them as one."""
        return frozenset()


# ------------------------------------------------------------------------------------------
# Padded layout of the nodes of a batched graph
# ------------------------------------------------------------------------------------------


@dataclass
class NodeLayout:
    """Where each node of a batched graph sits in a padded ``[B, M]`` layout.

    ``graph_ids[n]`` is the graph of node ``n`` and ``positions[n]`` its index inside that graph;
    ``mask[b, i]`` is True where graph ``b`` has an ``i``-th node.
    """

    graph_ids: torch.Tensor
    positions: torch.Tensor
    counts: torch.Tensor
    mask: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.mask.shape[0])

    @property
    def max_nodes(self) -> int:
        return int(self.mask.shape[1])

    @classmethod
    def of(cls, graph: dgl.DGLGraph) -> NodeLayout:
        counts = graph.batch_num_nodes()
        device = counts.device
        batch = counts.shape[0]
        graph_ids = torch.repeat_interleave(torch.arange(batch, device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        positions = torch.arange(graph_ids.shape[0], device=device) - starts[graph_ids]
        max_nodes = int(counts.max()) if batch else 0
        mask = torch.arange(max_nodes, device=device).unsqueeze(0) < counts.unsqueeze(1)
        return cls(graph_ids, positions, counts, mask)

    def pad(self, feats: torch.Tensor) -> torch.Tensor:
        """[N, D] node features -> [B, M, D], zeros where there is no node."""
        padded = feats.new_zeros(self.batch_size, self.max_nodes, feats.shape[-1])
        padded[self.graph_ids, self.positions] = feats
        return padded

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """[B, M, D] -> [N, D] in the node order of the batched graph."""
        return padded[self.graph_ids, self.positions]

    def graph_mean_std(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-graph mean and (unbiased, n-1 clamped to 1, as torch_scatter.scatter_std) standard
        deviation of node features, each [B, D]."""
        counts = self.counts.to(feats.dtype).unsqueeze(1)
        total = feats.new_zeros(self.batch_size, feats.shape[1]).index_add_(
            0, self.graph_ids, feats
        )
        mean = total / counts
        sq = (feats - mean[self.graph_ids]) ** 2
        ss = feats.new_zeros(self.batch_size, feats.shape[1]).index_add_(0, self.graph_ids, sq)
        std = torch.sqrt(ss / ((counts - 1).clamp(min=1) + 1e-6))
        return mean, std

    def graph_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum node values [N, ...] per graph -> [B, ...]."""
        out = values.new_zeros((self.batch_size, *values.shape[1:]))
        return out.index_add_(0, self.graph_ids, values)


# ------------------------------------------------------------------------------------------
# Message passing (CIGIN / CGIB GatherModel)
# ------------------------------------------------------------------------------------------


class EdgeConditionedConv(nn.Module):
    """Edge-conditioned convolution (Gilmer et al. 2017), numerically the same layer as
    ``dgl.nn.NNConv(in, out, edge_func, aggregator_type="sum", residual=True)`` with
    ``edge_func = Linear(edge_in, edge_hidden) -> ReLU -> Linear(edge_hidden, in*out)``:
    ``out_v = res(h_v) + bias + sum_{u->v} h_u @ W(e_uv)``.

    NNConv runs the edge network on every edge and materializes ``[E, in, out]`` weights and
    messages at every call. Bond features are one-hot, so a batch has only a handful of distinct
    edge feature rows (about 10 in 256 MNSol pairs); the edge network runs once per distinct row
    (``edge_weights``, once per forward, reused across message-passing steps) and
    ``dgl.ops.gather_mm`` multiplies each edge's source features by its row's matrix without
    copying it per edge: 5x faster than NNConv's formulation on CPU, same numbers (see the
    equivalence test in tests/models/test_models.py). Parameter names match NNConv's.
    """

    def __init__(self, in_dim: int, out_dim: int, edge_in: int, edge_hidden: int) -> None:
        super().__init__()
        self.in_dim, self.out_dim = in_dim, out_dim
        self.edge_func = nn.Sequential(
            nn.Linear(edge_in, edge_hidden), nn.ReLU(), nn.Linear(edge_hidden, in_dim * out_dim)
        )
        self.res_fc: nn.Module = (
            nn.Identity() if in_dim == out_dim else nn.Linear(in_dim, out_dim, bias=False)
        )
        self.bias = nn.Parameter(torch.zeros(out_dim))
        if isinstance(self.res_fc, nn.Linear):  # NNConv's initialization
            nn.init.xavier_normal_(self.res_fc.weight, gain=nn.init.calculate_gain("relu"))

    def edge_weights(self, efeat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per distinct edge feature row: weight matrices [U, in, out]; per edge: its row [E]."""
        rows, inverse = distinct_rows(efeat)
        return self.edge_func(rows).view(-1, self.in_dim, self.out_dim), inverse

    def forward(
        self,
        graph: dgl.DGLGraph,
        feat: torch.Tensor,
        efeat: torch.Tensor,
        weights: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        out = self.res_fc(feat) + self.bias
        if graph.num_edges() == 0:  # e.g. a batch of water molecules: no messages at all
            return out
        w, inverse = weights if weights is not None else self.edge_weights(efeat)
        src, dst = graph.edges()
        messages = dgl.ops.gather_mm(feat[src], w, idx_b=inverse)
        return out.index_add(0, dst, messages)


def distinct_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.unique(x, dim=0, return_inverse=True)``, fast for 0/1 matrices (one-hot features).

    ``unique(dim=0)`` compares rows one by one (it took 44 % of a CIGIN forward); 0/1 rows are
    instead read as binary numbers, made unique as integers and decoded back (exact).
    """
    width = x.shape[1]
    if 0 < width <= 52 and bool(((x == 0) | (x == 1)).all()):
        bits = torch.arange(width, device=x.device)
        codes = (x.to(torch.float64) @ (2.0**bits).to(torch.float64)).to(torch.int64)
        unique_codes, inverse = torch.unique(codes, return_inverse=True)
        rows = ((unique_codes.unsqueeze(1) >> bits) & 1).to(x.dtype)
        return rows, inverse
    return torch.unique(x, dim=0, return_inverse=True)


class GatherEncoder(nn.Module):
    """CIGIN's ``GatherModel`` (also CGIB's backbone encoder):
    ``h0 = ReLU(Linear(x))``; ``T`` times: ``m = ReLU(conv(h, e))``, ``h = Linear([m, h])``;
    returns ``h + x`` (a residual to the raw atom features).

    Follows devalab/CIGIN ``CIGIN_V2/model.py``: one edge-conditioned conv shared by all steps,
    its edge network's hidden size equal to the edge feature size (CIGIN passes
    ``edge_input_dim`` as ``edge_hidden_dim``), and a *linear* update of ``[m, h]``; the GRU
    update of Gilmer's MPNN is available as ``update="gru"``. The residual ``h + x`` needs
    ``hidden == node_in`` (true in CIGIN: 42/42, CGIB: 52/52); otherwise ``x`` goes through a
    bias-free linear projection (our deviation, only when the sizes differ).
    """

    def __init__(
        self,
        node_in: int,
        edge_in: int,
        hidden: int,
        edge_hidden: int,
        steps: int,
        update: str = "linear",
    ) -> None:
        super().__init__()
        if update not in ("linear", "gru"):
            raise ValueError(f"update must be 'linear' or 'gru', not {update!r}")
        self.steps = steps
        self.update = update
        self.lin0 = nn.Linear(node_in, hidden)
        self.conv = EdgeConditionedConv(hidden, hidden, edge_in, edge_hidden)
        self.message_layer: nn.Module = (
            nn.Linear(2 * hidden, hidden) if update == "linear" else nn.GRUCell(hidden, hidden)
        )
        self.skip: nn.Module = (
            nn.Identity() if node_in == hidden else nn.Linear(node_in, hidden, bias=False)
        )

    def forward(self, graph: dgl.DGLGraph, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.lin0(x))
        weights = self.conv.edge_weights(e) if graph.num_edges() else None
        for _ in range(self.steps):
            m = F.relu(self.conv(graph, h, e, weights))
            h = (
                self.message_layer(torch.cat([m, h], dim=1))
                if self.update == "linear"
                else self.message_layer(m, h)
            )
        return h + self.skip(x)


# ------------------------------------------------------------------------------------------
# Interaction between the two molecules of each pair
# ------------------------------------------------------------------------------------------


@dataclass
class Interaction:
    """Result of ``interact``: interaction-updated node features and the padded map.

    ``solute_prime`` [N_solute, D] = I @ h_solvent and ``solvent_prime`` [N_solvent, D] =
    I^T @ h_solute, pair by pair; ``imap`` [B, M_solute, M_solvent] is zero outside ``mask``.
    """

    solute_prime: torch.Tensor
    solvent_prime: torch.Tensor
    imap: torch.Tensor
    mask: torch.Tensor


def interact(
    solute_h: torch.Tensor,
    solvent_h: torch.Tensor,
    solute_layout: NodeLayout,
    solvent_layout: NodeLayout,
    tanh: bool,
) -> Interaction:
    """Pairwise dot-product scores between all solute and solvent atoms *of the same pair*.

    CIGIN builds the full ``[N_solute, N_solvent]`` product for the whole batch and multiplies by
    a block mask; here both sides are padded to ``[B, M, D]`` and multiplied per pair (``bmm``),
    which gives the same blocks without computing (or storing) any cross-pair entry.
    """
    if solute_layout.batch_size != solvent_layout.batch_size:
        raise ValueError(
            f"{solute_layout.batch_size} solute graphs but {solvent_layout.batch_size} solvent "
            "graphs in the batch"
        )
    u = solute_layout.pad(solute_h)
    v = solvent_layout.pad(solvent_h)
    scores = torch.bmm(u, v.transpose(1, 2))
    if tanh:
        scores = torch.tanh(scores)
    mask = solute_layout.mask.unsqueeze(2) & solvent_layout.mask.unsqueeze(1)
    imap = scores * mask.to(scores.dtype)  # padded rows are already 0; keep it explicit
    solute_prime = solute_layout.unpad(torch.bmm(imap, v))
    solvent_prime = solvent_layout.unpad(torch.bmm(imap.transpose(1, 2), u))
    return Interaction(solute_prime, solvent_prime, imap, mask)


def interaction_blocks(imap: torch.Tensor, mask: torch.Tensor) -> list[torch.Tensor]:
    """Split a padded interaction map into one ``[n_solute, n_solvent]`` block per pair."""
    rows = mask.any(dim=2).sum(dim=1).tolist()
    cols = mask.any(dim=1).sum(dim=1).tolist()
    return [imap[b, :r, :c] for b, (r, c) in enumerate(zip(rows, cols, strict=True))]


def mlp_head(
    in_dim: int, hidden: tuple[int, ...] = (256, 128), dropout: float = 0.0
) -> nn.Sequential:
    """CIGIN's prediction head: Linear -> ReLU for each hidden size, then Linear(., 1)."""
    layers: list[nn.Module] = []
    prev = in_dim
    for width in hidden:
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Linear(prev, width), nn.ReLU()]
        prev = width
    layers.append(nn.Linear(prev, 1))
    return nn.Sequential(*layers)


def require_positive(**values: int | float | None) -> None:
    """Raise ValueError naming every size/step argument that is given and not > 0."""
    bad = {k: v for k, v in values.items() if v is not None and not v > 0}
    if bad:
        raise ValueError(f"must be > 0: {bad}")


def zero_loss(like: torch.Tensor) -> torch.Tensor:
    return like.new_zeros(())


# ------------------------------------------------------------------------------------------
# The CIGIN backbone (CIGIN, CGIB)
# ------------------------------------------------------------------------------------------


# Where precomputed node features of a side travel in a batched graph (inference only).
ENCODED_KEYS = {"solute": "h_encoded_solute", "solvent": "h_encoded_solvent"}


class GatherInteractionModel(PairModel):
    """CIGIN's architecture, which CGIB reuses as its backbone: a ``GatherEncoder`` per side, the
    interaction map (``interact``), a Set2Set readout of ``[h, I h_other]`` per side and the MLP
    head on both readouts. Subclasses validate their arguments, call ``_build_backbone`` and
    write ``forward`` from ``_encode``, ``interact``, the Set2Set layers and ``_predict``.
    """

    def _build_backbone(
        self,
        node_in: int,
        edge_in: int,
        hidden_dim: int | None,
        edge_hidden_dim: int | None,
        message_passing_steps: int,
        set2set_steps: int,
        set2set_layers: int,
        update: str,
        interaction: bool = True,
        predictor: bool = True,
    ) -> dict[str, Any]:
        """Create the shared layers: the two message-passing encoders, their Set2Set readouts
        over each atom's state and its interaction-weighted partner summary (over the state
        alone without ``interaction``) and, with ``predictor``, CIGIN's head. Returns the
        backbone's hyper-parameters as the model records them, the sizes resolved (None means
        the input size); a subclass adds its own."""
        require_positive(
            hidden_dim=hidden_dim,
            edge_hidden_dim=edge_hidden_dim,
            message_passing_steps=message_passing_steps,
            set2set_steps=set2set_steps,
            set2set_layers=set2set_layers,
        )
        hidden = hidden_dim or node_in
        edge_hidden = edge_hidden_dim or edge_in
        # The attribute names are the keys of saved state dicts, and the creation order decides
        # the initial weights drawn for a seed: changing either breaks reproducing old runs.
        self.solute_gather = GatherEncoder(
            node_in, edge_in, hidden, edge_hidden, message_passing_steps, update
        )
        self.solvent_gather = GatherEncoder(
            node_in, edge_in, hidden, edge_hidden, message_passing_steps, update
        )
        side = 2 * hidden if interaction else hidden
        self.set2set_solute = Set2Set(side, set2set_steps, set2set_layers)
        self.set2set_solvent = Set2Set(side, set2set_steps, set2set_layers)
        if predictor:
            self.predictor = mlp_head(self.readout_dim)
        return {
            "node_in": node_in,
            "edge_in": edge_in,
            "hidden_dim": hidden,
            "edge_hidden_dim": edge_hidden,
            "message_passing_steps": message_passing_steps,
            "set2set_steps": set2set_steps,
            "set2set_layers": set2set_layers,
            "update": update,
        }

    @property
    def readout_dim(self) -> int:
        """Width of the pair readout: the two Set2Set outputs side by side."""
        return self.set2set_solute.output_dim + self.set2set_solvent.output_dim

    def encode_molecules(self, graphs: dgl.DGLGraph, role: str) -> torch.Tensor:
        """Message passing over a batch of molecules of one ``role`` ("solute" or "solvent"):
        their node features [N, h]. A molecule's features do not depend on its partner, so
        inference over many pairs computes them once per unique molecule (the predictor stores
        them under ``ENCODED_KEYS[role]`` and ``_encode`` then skips that encoder)."""
        gather = self.solute_gather if role == "solute" else self.solvent_gather
        return gather(graphs, graphs.ndata["h"], graphs.edata["e"])

    def _encode(
        self, solute_bg: dgl.DGLGraph, solvent_bg: dgl.DGLGraph
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Node features of both sides after message passing: ([N_solute, h], [N_solvent, h])."""
        encoded = []
        for role, graphs in (("solute", solute_bg), ("solvent", solvent_bg)):
            key = ENCODED_KEYS[role]
            if not self.training and key in graphs.ndata:
                encoded.append(graphs.ndata[key])
            else:
                encoded.append(self.encode_molecules(graphs, role))
        return encoded[0], encoded[1]

    def _predict(self, solute_readout: torch.Tensor, solvent_readout: torch.Tensor) -> torch.Tensor:
        """The head on the two Set2Set vectors of each pair: [B]."""
        return self.predictor(torch.cat([solute_readout, solvent_readout], dim=1)).squeeze(-1)
