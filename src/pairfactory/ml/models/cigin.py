"""CIGIN: Chemically Interpretable Graph Interaction Network (Pathak et al., AAAI 2020).

Follows devalab/CIGIN ``CIGIN_V2/model.py`` (``CIGINModel`` with ``interaction="dot"``):

- two ``GatherModel`` encoders (solute, solvent), 6 message-passing steps, hidden size equal to
  the atom feature size (CIGIN: 42 = its feature size; here ``None`` -> ``node_in``);
- interaction map ``I = tanh(h_solute . h_solvent^T)`` between the atoms of each pair,
  ``solute' = [h, I h_solvent]``, ``solvent' = [h, I^T h_solute]``;
- Set2Set readout of each side (2 iterations, 1 LSTM layer), concatenated (8 x hidden);
- head ``Linear(8h, 256) -> ReLU -> Linear(256, 128) -> ReLU -> Linear(128, 1)``.

Deviations: the interaction is computed per pair on padded tensors (same numbers, no cross-pair
work); ``aux["interaction_map"]`` holds the map actually used (after tanh, CIGIN returns the
pre-tanh scores); our atom/bond features (``pairfactory.ml.featurize``) replace CIGIN's 42/10.
"""

from __future__ import annotations

import dgl
import torch

from pairfactory.ml.models.layers import (
    GatherInteractionModel,
    ModelOutput,
    NodeLayout,
    interact,
    zero_loss,
)


class CIGIN(GatherInteractionModel):
    def __init__(
        self,
        node_in: int,
        edge_in: int,
        hidden_dim: int | None = None,
        edge_hidden_dim: int | None = None,
        message_passing_steps: int = 6,
        set2set_steps: int = 2,
        set2set_layers: int = 1,
        update: str = "linear",
        tanh: bool = True,
    ) -> None:
        super().__init__()
        backbone = self._build_backbone(
            node_in,
            edge_in,
            hidden_dim,
            edge_hidden_dim,
            message_passing_steps,
            set2set_steps,
            set2set_layers,
            update,
        )
        self.hparams = {
            **backbone,
            "tanh": tanh,
        }
        self.tanh = tanh

    def forward(self, solute_bg: dgl.DGLGraph, solvent_bg: dgl.DGLGraph) -> ModelOutput:
        hu, hv = self._encode(solute_bg, solvent_bg)
        inter = interact(
            hu, hv, NodeLayout.of(solute_bg), NodeLayout.of(solvent_bg), tanh=self.tanh
        )
        gu = self.set2set_solute(solute_bg, torch.cat([hu, inter.solute_prime], dim=1))
        gv = self.set2set_solvent(solvent_bg, torch.cat([hv, inter.solvent_prime], dim=1))
        prediction = self._predict(gu, gv)
        return ModelOutput(
            prediction=prediction,
            aux_loss=zero_loss(prediction),
            aux={"interaction_map": inter.imap.detach(), "interaction_mask": inter.mask},
        )
