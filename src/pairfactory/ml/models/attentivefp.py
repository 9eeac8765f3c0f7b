"""AttentiveFP (Xiong et al., J. Med. Chem. 2020) as a solute–solvent pair model.

Our own DGL implementation following dgllife's ``AttentiveFPGNN`` + ``AttentiveFPReadout``
(dgllife.model.gnn.attentivefp, dgllife.model.readout.attentivefp_readout):

- ``GetContext``: node projection ``LeakyReLU(Linear(x))``; edge projection
  ``LeakyReLU(Linear([x_dst, e]))``; attention logits ``LeakyReLU(Linear([h_src', e']))``,
  softmax over the in-edges of each atom, context ``ELU(sum a * Linear(e'))``, ``ReLU(GRU)`` update;
- ``num_layers - 1`` further ``GNNLayer``s: logits from ``[h_dst, h_src]``, context
  ``ELU(sum a * Linear(h_src))``, ``ReLU(GRU)`` update;
- readout: graph vector = sum of atoms, then ``num_timesteps`` attentive GRU updates
  (atom weights = softmax over the molecule's atoms of ``LeakyReLU(Linear([ReLU(g), h]))``).

dgllife defaults: ``num_layers=2``, ``num_timesteps=2``, ``graph_feat_size=200``,
``dropout=0``. One encoder + readout per molecule (solute, solvent; no weight sharing); the two
graph vectors are concatenated and go through the same MLP head as CIGIN
(``400 -> 256 -> 128 -> 1``) instead of dgllife's single Linear, so that the baseline can model
solute–solvent combinations rather than a sum of two independent terms. A one-atom molecule has
no edges: its context is zero and the GRU still updates it (no self loops needed).
"""

from __future__ import annotations

import dgl
import dgl.function as fn
import torch
import torch.nn.functional as F
from dgl.nn.functional import edge_softmax
from torch import nn

from pairfactory.ml.models.layers import (
    ModelOutput,
    PairModel,
    mlp_head,
    require_positive,
    zero_loss,
)


class _GetContext(nn.Module):
    def __init__(self, node_in: int, edge_in: int, size: int, dropout: float) -> None:
        super().__init__()
        self.project_node = nn.Sequential(nn.Linear(node_in, size), nn.LeakyReLU())
        self.project_edge1 = nn.Sequential(nn.Linear(node_in + edge_in, size), nn.LeakyReLU())
        self.project_edge2 = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * size, 1), nn.LeakyReLU()
        )
        self.edge_transform = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, size))
        self.gru = nn.GRUCell(size, size)

    def forward(self, g: dgl.DGLGraph, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        hv_new = self.project_node(x)
        if g.num_edges() == 0:
            return F.relu(self.gru(torch.zeros_like(hv_new), hv_new))
        with g.local_scope():
            g.ndata["hv"] = x
            g.ndata["hv_new"] = hv_new
            g.edata["he"] = e
            g.apply_edges(
                lambda edges: {"he1": torch.cat([edges.dst["hv"], edges.data["he"]], dim=1)}
            )
            he1 = self.project_edge1(g.edata["he1"])
            g.edata["he1"] = he1
            g.apply_edges(
                lambda edges: {"he2": torch.cat([edges.src["hv_new"], edges.data["he1"]], dim=1)}
            )
            logits = self.project_edge2(g.edata["he2"])
            g.edata["m"] = edge_softmax(g, logits) * self.edge_transform(he1)
            g.update_all(fn.copy_e("m", "m"), fn.sum("m", "c"))
            context = F.elu(g.ndata["c"])
        return F.relu(self.gru(context, hv_new))


class _GNNLayer(nn.Module):
    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.project_edge = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * size, 1), nn.LeakyReLU()
        )
        self.project_node = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, size))
        self.gru = nn.GRUCell(size, size)

    def forward(self, g: dgl.DGLGraph, h: torch.Tensor) -> torch.Tensor:
        if g.num_edges() == 0:
            return F.relu(self.gru(torch.zeros_like(h), h))
        with g.local_scope():
            g.ndata["hv"] = h
            g.apply_edges(
                lambda edges: {"he": torch.cat([edges.dst["hv"], edges.src["hv"]], dim=1)}
            )
            g.edata["a"] = edge_softmax(g, self.project_edge(g.edata["he"]))
            g.ndata["hp"] = self.project_node(h)
            g.update_all(fn.u_mul_e("hp", "a", "m"), fn.sum("m", "c"))
            context = F.elu(g.ndata["c"])
        return F.relu(self.gru(context, h))


class _GlobalPool(nn.Module):
    def __init__(self, size: int, dropout: float) -> None:
        super().__init__()
        self.compute_logits = nn.Sequential(nn.Linear(2 * size, 1), nn.LeakyReLU())
        self.project_nodes = nn.Sequential(nn.Dropout(dropout), nn.Linear(size, size))
        self.gru = nn.GRUCell(size, size)

    def forward(
        self, g: dgl.DGLGraph, h: torch.Tensor, g_feats: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with g.local_scope():
            g.ndata["z"] = self.compute_logits(
                torch.cat([dgl.broadcast_nodes(g, F.relu(g_feats)), h], dim=1)
            )
            weights = dgl.softmax_nodes(g, "z")
            g.ndata["a"] = weights
            g.ndata["hv"] = self.project_nodes(h)
            context = F.elu(dgl.sum_nodes(g, "hv", "a"))
        return self.gru(context, g_feats), weights


class AttentiveFPEncoder(nn.Module):
    """AttentiveFPGNN + AttentiveFPReadout for one molecule type: graph -> [B, size]."""

    def __init__(
        self,
        node_in: int,
        edge_in: int,
        size: int,
        num_layers: int,
        num_timesteps: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if num_layers < 1 or num_timesteps < 1:
            raise ValueError(
                f"num_layers and num_timesteps must be >= 1 (got {num_layers}, {num_timesteps})"
            )
        self.context = _GetContext(node_in, edge_in, size, dropout)
        self.layers = nn.ModuleList(_GNNLayer(size, dropout) for _ in range(num_layers - 1))
        self.readouts = nn.ModuleList(_GlobalPool(size, dropout) for _ in range(num_timesteps))

    def forward(self, g: dgl.DGLGraph) -> tuple[torch.Tensor, torch.Tensor]:
        """Graph vectors [B, size] and the atom weights of the last readout step [N, 1]."""
        h = self.context(g, g.ndata["h"], g.edata["e"])
        for layer in self.layers:
            h = layer(g, h)
        with g.local_scope():
            g.ndata["h_out"] = h
            g_feats = dgl.sum_nodes(g, "h_out")
        weights = h.new_ones(h.shape[0], 1)
        for readout in self.readouts:
            g_feats, weights = readout(g, h, g_feats)
        return g_feats, weights


class AttentiveFP(PairModel):
    def __init__(
        self,
        node_in: int,
        edge_in: int,
        graph_feat_size: int = 200,
        num_layers: int = 2,
        num_timesteps: int = 2,
        dropout: float = 0.0,
        head_hidden: tuple[int, ...] = (256, 128),
    ) -> None:
        super().__init__()
        require_positive(
            graph_feat_size=graph_feat_size, num_layers=num_layers, num_timesteps=num_timesteps
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {dropout}")
        self.hparams = {
            "node_in": node_in,
            "edge_in": edge_in,
            "graph_feat_size": graph_feat_size,
            "num_layers": num_layers,
            "num_timesteps": num_timesteps,
            "dropout": dropout,
            "head_hidden": tuple(head_hidden),
        }
        self.solute_encoder = AttentiveFPEncoder(
            node_in, edge_in, graph_feat_size, num_layers, num_timesteps, dropout
        )
        self.solvent_encoder = AttentiveFPEncoder(
            node_in, edge_in, graph_feat_size, num_layers, num_timesteps, dropout
        )
        self.predictor = mlp_head(2 * graph_feat_size, tuple(head_hidden), dropout)

    def forward(self, solute_bg: dgl.DGLGraph, solvent_bg: dgl.DGLGraph) -> ModelOutput:
        gu, wu = self.solute_encoder(solute_bg)
        gv, wv = self.solvent_encoder(solvent_bg)
        prediction = self.predictor(torch.cat([gu, gv], dim=1)).squeeze(-1)
        return ModelOutput(
            prediction=prediction,
            aux_loss=zero_loss(prediction),
            aux={
                "solute_atom_weights": wu.detach().squeeze(-1),
                "solvent_atom_weights": wv.detach().squeeze(-1),
            },
        )
