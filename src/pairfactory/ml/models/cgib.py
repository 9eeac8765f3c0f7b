"""CGIB: Conditional Graph Information Bottleneck (Lee et al., ICML 2023), regression and
contrastive variants.

Follows Namkyeong/CGIB ``MolecularInteraction/models/CGIB.py`` and ``CGIB_cont.py``:

- CIGIN backbone with CGIB's settings: two ``GatherModel`` encoders with **3** message-passing
  steps, hidden size = atom feature size (CGIB: 52), node features L2-normalized before the
  interaction, interaction map = cosine similarity **without tanh**, Set2Set (2 steps, 1 layer),
  the same 8h -> 256 -> 128 -> 1 head, Xavier-uniform init of every Linear layer;
- bottleneck on the solute, conditioned on the solvent through the interaction features
  ``[h, I h_solvent]``: compressor ``Linear(2h, h) -> BatchNorm -> ReLU -> Linear(h, 1)`` gives a
  per-atom logit ``p``; during training a concrete (Gumbel-sigmoid, temperature 1) keep gate
  ``lambda`` is drawn, and each solute atom is replaced by
  ``lambda h + (1 - lambda) eps, eps ~ N(mu_graph, sigma_graph^2)`` (per-graph mean/std of the
  solute features, detached), i.e. mean ``lambda h + (1-lambda) mu`` and std ``(1-lambda) sigma``;
- KL term, CGIB's closed form (``kl_form="cgib"``): per graph
  ``sum_atoms mean_dims [ 0.5 (sigma_1/sigma)^2 ] + mean_dims sum_atoms ((mu_1 - mu)/sigma)^2``,
  averaged over graphs; ``kl_form="exact"`` is the full Gaussian KL
  ``log(sigma/sigma_1) + (sigma_1^2 + (mu_1-mu)^2)/(2 sigma^2) - 1/2`` (summed over atoms,
  averaged over feature dimensions); both are >= 0;
- conditional term: ``cgib`` regresses the solvent's Set2Set vector from the compressed solute's
  (``Linear(4h, 4h)``, MSE); ``cgib_contrastive`` uses InfoNCE between the compressed solute
  vector and the solvent vector of the same pair (cosine similarity / ``tau``) against the other
  pairs of the batch (``contrast_target="full"``: against the uncompressed solute vector of the
  same pair instead, our option: with a single solvent, e.g. water in FreeSolv, every solvent
  vector is nearly the same and the published target gives a constant log(batch size));
- defaults ``beta = 1.0`` (weight of KL and conditional term) and ``tau = 1.0``, as CGIB's
  ``argument.py``.

CGIB's training step is ``MSE(full, y) + MSE(bottleneck, y) + beta KL + beta L_cond``. Our
contract is ``loss = mse(prediction, y) + aux_loss`` with no ``y`` inside the model, so in
training mode ``prediction = (full + bottleneck) / 2`` and
``aux_loss = mean((full - bottleneck)^2) / 4 + beta (KL + L_cond) / 2``: by the identity
``(a-y)^2 + (b-y)^2 = 2((a+b)/2 - y)^2 + (a-b)^2/2`` the total is exactly half of CGIB's loss
(the same optimum; Adam is invariant to the factor). ``aux`` carries both predictions and
each term. In eval mode the prediction is the full path, deterministic, with no noise.

Deviations from the published code: the noise is Gaussian as in the paper (the code draws
``torch.rand_like``, i.e. uniform); the contrastive loss is the standard InfoNCE (the code divides
by the sum of the *negatives* only, which is undefined for a batch of one); the BatchNorm of the
compressor falls back to its running statistics for a batch with a single solute atom (where
batch statistics do not exist).
"""

from __future__ import annotations

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from pairfactory.ml.models.layers import (
    GatherInteractionModel,
    ModelOutput,
    NodeLayout,
    interact,
    require_positive,
)

_EPS = 1e-7
_GATE_BIAS = 1e-4  # CGIB draws the concrete noise from U(1e-4, 1 - 1e-4) ("if bias is 0 ...")


class _BatchNorm1dAnySize(nn.BatchNorm1d):
    """BatchNorm1d that uses its running statistics when a training batch has a single row."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class CGIB(GatherInteractionModel):
    def __init__(
        self,
        node_in: int,
        edge_in: int,
        hidden_dim: int | None = None,
        edge_hidden_dim: int | None = None,
        message_passing_steps: int = 3,
        set2set_steps: int = 2,
        set2set_layers: int = 1,
        beta: float = 1.0,
        contrastive: bool = False,
        tau: float = 1.0,
        contrast_target: str = "solvent",
        kl_form: str = "cgib",
        temperature: float = 1.0,
        update: str = "linear",
    ) -> None:
        super().__init__()
        if kl_form not in ("cgib", "exact"):
            raise ValueError(f"kl_form must be 'cgib' or 'exact', not {kl_form!r}")
        if contrast_target not in ("solvent", "full"):
            raise ValueError(
                f"contrast_target must be 'solvent' or 'full', not {contrast_target!r}"
            )
        if beta < 0:
            raise ValueError(f"beta must be >= 0, not {beta}")
        require_positive(
            tau=tau,
            temperature=temperature,
        )
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
        hidden = backbone["hidden_dim"]
        self.hparams = {
            **backbone,
            "beta": beta,
            "contrastive": contrastive,
            "tau": tau,
            "contrast_target": contrast_target,
            "kl_form": kl_form,
            "temperature": temperature,
        }
        self.beta, self.contrastive, self.tau, self.contrast_target = (
            beta,
            contrastive,
            tau,
            contrast_target,
        )
        self.kl_form, self.temperature = kl_form, temperature
        self.compressor = nn.Sequential(
            nn.Linear(2 * hidden, hidden),
            _BatchNorm1dAnySize(hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )
        # Only the regression variant uses it; the contrastive variant keeps no unused weights.
        self.solvent_predictor = None if contrastive else nn.Linear(4 * hidden, 4 * hidden)
        for module in self.modules():  # CGIB's init_model
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, solute_bg: dgl.DGLGraph, solvent_bg: dgl.DGLGraph) -> ModelOutput:
        hu, hv = (F.normalize(h, dim=1) for h in self._encode(solute_bg, solvent_bg))
        solute_layout = NodeLayout.of(solute_bg)
        inter = interact(hu, hv, solute_layout, NodeLayout.of(solvent_bg), tanh=False)
        solute_feats = torch.cat([hu, inter.solute_prime], dim=1)
        solvent_feats = torch.cat([hv, inter.solvent_prime], dim=1)

        gv = self.set2set_solvent(solvent_bg, solvent_feats)
        gu = self.set2set_solute(solute_bg, solute_feats)
        full = self._predict(gu, gv)
        logits = self.compressor(solute_feats).squeeze(-1)
        aux: dict[str, torch.Tensor] = {
            "interaction_map": inter.imap.detach(),
            "interaction_mask": inter.mask,
            "keep_probability": torch.sigmoid(logits).detach(),  # per solute atom
        }
        if not self.training:
            return ModelOutput(prediction=full, aux_loss=full.new_zeros(()), aux=aux)

        noisy, kl = self._bottleneck(solute_feats, logits, solute_layout)
        gu_noisy = self.set2set_solute(solute_bg, noisy)
        bottleneck = self._predict(gu_noisy, gv)
        if self.contrastive:
            cond = info_nce(gu_noisy, gv if self.contrast_target == "solvent" else gu, self.tau)
        else:
            assert self.solvent_predictor is not None
            cond = F.mse_loss(self.solvent_predictor(gu_noisy), gv)
        aux_loss = 0.25 * torch.mean((full - bottleneck) ** 2) + 0.5 * self.beta * (kl + cond)
        aux.update(
            full_prediction=full.detach(),
            bottleneck_prediction=bottleneck.detach(),
            kl=kl.detach(),
            conditional_loss=cond.detach(),
            preserve_rate=(logits > 0).float().mean().detach(),
        )
        return ModelOutput(prediction=0.5 * (full + bottleneck), aux_loss=aux_loss, aux=aux)

    def _bottleneck(
        self, feats: torch.Tensor, logits: torch.Tensor, layout: NodeLayout
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Noisy solute node features and the KL term (see the module docstring)."""
        u = torch.rand_like(logits) * (1 - 2 * _GATE_BIAS) + _GATE_BIAS
        keep = torch.sigmoid(
            (torch.log(u) - torch.log1p(-u) + logits) / self.temperature
        ).unsqueeze(1)
        drop = 1 - keep
        mean, std = layout.graph_mean_std(feats.detach())
        mean, std = mean[layout.graph_ids], std[layout.graph_ids]
        noisy_mean = keep * feats + drop * mean
        noisy_std = drop * std
        noisy = noisy_mean + torch.randn_like(noisy_mean) * noisy_std

        z2 = ((noisy_mean - mean) / (std + _EPS)) ** 2  # [N, D]
        if self.kl_form == "cgib":
            var_ratio = (noisy_std / (std + _EPS)) ** 2
            per_graph = 0.5 * layout.graph_sum(var_ratio.mean(dim=1)) + layout.graph_sum(z2).mean(
                dim=1
            )
        else:
            # KL(N(mu1, (d sigma)^2) || N(mu, sigma^2)) = -log d + d^2/2 + z2/2 - 1/2 where
            # sigma > 0; a dimension with sigma = 0 (e.g. a one-atom solute) has no noise and
            # contributes 0.
            d = drop.clamp(min=1e-6)
            per_dim = -torch.log(d) + 0.5 * d**2 + 0.5 * z2 - 0.5
            per_dim = per_dim * (std > _EPS).to(per_dim.dtype)
            per_graph = layout.graph_sum(per_dim.mean(dim=1))
        return noisy, per_graph.mean()


def info_nce(anchor: torch.Tensor, positive: torch.Tensor, tau: float) -> torch.Tensor:
    """InfoNCE: row i of ``anchor`` against every row of ``positive`` (cosine / tau), target i."""
    sim = F.normalize(anchor, dim=1) @ F.normalize(positive, dim=1).t() / tau
    return F.cross_entropy(sim, torch.arange(sim.shape[0], device=sim.device))
