"""ProbPair: a probabilistic dual-graph pair model that learns from the training pairs' QM samples
but needs only the two molecular graphs at inference.

Architecture (every part but the backbone is switched by a hyper-parameter, so an ablation is a
config entry under ``evaluate.model_hparams.probpair``):

- **backbone** (CGIB's settings of the CIGIN architecture, ``layers.GatherEncoder``): one
  edge-conditioned message-passing encoder per side (3 steps, hidden size = atom feature size),
  node features L2-normalized;
- **interaction** (``interaction``): the atom-wise solute x solvent cosine map ``I`` of each pair
  (``layers.interact``, masked per pair); each side is read out by Set2Set over ``[h, I h_other]``
  (off: over ``h`` alone);
- **contacts** (``contact_weight``, ``contact_head``): the atom states are also trained against the
  fraction of the pair's samples in which solute atom i touches solvent atom j (binary
  cross-entropy over the entries where the pair has a contact map). ``contact_head: cosine`` reads
  the contact logits as a learned affine map of ``I`` itself (so the contacts shape the map the
  main task reads); ``bilinear`` gives them a head of their own (``ContactHead``: each atom's own
  propensity plus a low-rank bilinear term in the two atoms' states), which can express what a
  logistic regression on the two atoms' features finds, but shapes the map only through the
  shared encoders;
- **information bottleneck** (``beta``): the two readouts give a Gaussian ``q(z | pair) =
  N(mu, diag(exp(logvar)))`` of size ``latent_dim``; training draws ``z = mu + sigma eps`` and adds
  ``beta KL(q || N(0, I))``; evaluation uses ``z = mu`` (deterministic). ``beta = 0``: ``z = mu``
  always, no ``logvar`` layer, no KL;
- **contrast with the samples** (``contrastive_weight``): a distance-aware 3D encoder
  (``ComplexEncoder``: atomic number + fragment embeddings, a SchNet-style interaction over a
  Gaussian RBF expansion of the interatomic distances with a cosine cutoff envelope, computed
  through per-atom radial descriptors so that it stays cheap, then ``complex_layers - 1`` full
  SchNet blocks, mean readout) embeds every optimized complex of a training pair and every decoy
  (same atoms, arrangements the optimizer did not reach). The score of (pair, 3D graph) is the
  cosine of the two projections (of ``z`` and of the 3D embedding) over ``tau``; InfoNCE takes
  each complex as the positive against its own pair's decoys only: other pairs' graphs have
  another composition, which would let the task be solved by counting atoms. The 3D encoder is
  used by ``training_loss`` only; ``forward`` (inference) never calls it;
- **auxiliary physics targets** (``aux_weight``): a head on ``z`` predicts the standardized
  ``AUX_TARGETS`` (masked MSE);
- **ΔG_solv(ALPB) as an input** (``alpb_input``, off by default; a labelled variant): the pair's
  implicit-solvent free energy (``dg_solv_alpb_kcal_mol``, from the descriptor table; NaN where
  the solvent has no ALPB parameters) enters the first head layer with a missing flag, through
  its own zero-initialized weights, so the variant starts as the model without it. Unlike the
  auxiliary target it is read at inference too: every pair needs one cheap ``xtb`` call per
  molecule, and the value of a test pair is an input, like its SMILES, never its label. It then
  leaves the auxiliary targets (predicting an input from itself teaches nothing);
- **probabilistic head** (``probabilistic``): mean and variance (softplus + ``variance_floor``)
  from ``z``, trained by the Gaussian negative log-likelihood (optionally the beta-NLL weighting
  of Seitzer et al. 2022, ``nll_beta``); off: a point prediction trained by MSE, ``variance``
  None.

Training loss (``training_loss``) = main (NLL or MSE) + contact + contrastive + aux + beta KL;
each supervision term is exactly 0 when its weight is 0 or the batch has no such supervision, so
with ``batch.supervision = None`` the model trains as its 2D twin (``probpair_2d`` in the
registry fixes the three supervision weights to 0).

Units: the mean and variance are in the units the model is trained in. Train it with
``standardize_targets: true`` (``TrainSettings``): the variance floor (1e-4) and the initial
variance (about 0.7) assume targets of unit scale, and an NLL on raw kcal/mol or nm spends its
first epochs learning the scale. ``train._predict`` maps both back to target units.

``forward`` returns a ``ProbPairOutput``: the ``ModelOutput`` fields (``aux`` detached, for
logging, as for every model; ``aux_loss`` = beta KL in training, 0 in evaluation) plus the
tensors ``training_loss`` needs, still attached to the graph (interaction map, ``mu``, ``logvar``,
``z``). Each optional part is initialized from its own seed (drawn once from the global
generator), so that for one seed switching a part off leaves the initial weights of every other
part unchanged.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import dgl
import torch
import torch.nn.functional as F
from torch import nn

from pairfactory.ml.datasets import (
    AUX_TARGETS,
    COMPLEX_GRAPH_CUTOFF_ANGSTROM,
    INPUT_SWITCHES,
)
from pairfactory.ml.models.layers import (
    GatherInteractionModel,
    ModelOutput,
    NodeLayout,
    interact,
    require_positive,
)

# Atomic numbers up to this get their own embedding row; heavier ones share the last row.
MAX_ATOMIC_NUMBER = 100
# Neighbour classes of the 3D encoder's radial descriptor: these elements (H C N O F P S Cl Br I)
# each, every other element one class.
ELEMENT_CLASSES: tuple[int, ...] = (1, 6, 7, 8, 9, 15, 16, 17, 35, 53)
# Steps of the distance grid on which the 3D encoder tabulates its RBF expansion, per RBF spacing:
# a distance is read at the nearest grid point, which moves an RBF value by at most
# 1 / (2 x 64 x sqrt(e)) < 0.005 whatever rbf_size is.
RBF_GRID_STEPS_PER_SPACING = 64
# Fragment 0 is the solute, 1.. the solvent copies: the copies are exchangeable, so all share one
# embedding row.
N_FRAGMENT_KINDS = 2
_LOG2 = math.log(2.0)
# How the contact logits are read from the atom states (``ProbPair`` docstring).
CONTACT_HEADS = ("cosine", "bilinear")
# Initial contact logit bias: contacts are rare (the mean contact fraction of a solute x solvent
# atom entry is about 0.25 on FreeSolv, 0.04 on MNSol's larger solvents); sigmoid(-2) = 0.12.
CONTACT_BIAS_INIT = -2.0
# A fixed scale for the ``alpb_input`` value: ΔG_solv(ALPB) spans about -20 to +5 kcal/mol; a
# fixed scale (no training-fold statistics) is the same at inference.
ALPB_INPUT_SCALE_KCAL_MOL = 10.0


@dataclass
class ProbPairOutput(ModelOutput):
    """``ModelOutput`` plus the attached tensors ``ProbPair.training_loss`` needs.

    ``interaction_map`` [B, M_solute, M_solvent] (None when ``interaction`` is off) and
    ``interaction_mask``; ``contact_logits`` [B, M_solute, M_solvent] and ``contact_mask`` (only
    with the bilinear contact head, and only in training mode); ``mu``, ``logvar`` (None when
    ``beta == 0``) and ``z`` [B, latent_dim].
    """

    interaction_map: torch.Tensor | None = None
    interaction_mask: torch.Tensor | None = None
    contact_logits: torch.Tensor | None = None
    contact_mask: torch.Tensor | None = None
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None
    z: torch.Tensor | None = None


class ProbPair(GatherInteractionModel):
    """The model of the module docstring. Hyper-parameters (defaults in the signature):

    - backbone: ``hidden_dim`` (None: the atom feature size), ``edge_hidden_dim`` (None: the bond
      feature size), ``message_passing_steps`` (3, CGIB), ``set2set_steps``, ``set2set_layers``,
      ``update`` (as CIGIN/CGIB);
    - ``interaction`` (True); ``contact_weight`` (0.1), ``contact_head`` (``cosine``: affine in
      the interaction map, needs ``interaction``; ``bilinear``: ``ContactHead``),
      ``contact_rank`` (32, the bilinear head's rank);
    - ``latent_dim`` (128), ``beta`` (1e-3, 0 = deterministic ``z``);
    - ``contrastive_weight`` (0.1), ``tau`` (0.1), ``complex_dim`` (32), ``complex_layers`` (1:
      the radial interaction only; one more, a full SchNet block, takes the epoch time from 2x to
      4.7x CIGIN's on FreeSolv with 8 + 8 sample graphs per pair: bench/probpair_epoch.py),
      ``rbf_size`` (16, over 0 to ``COMPLEX_GRAPH_CUTOFF_ANGSTROM``), ``projection_dim`` (64);
    - ``aux_weight`` (0.1);
    - ``alpb_input`` (False): ΔG_solv(ALPB) of the pair as an input (``input_names``);
    - ``probabilistic`` (True), ``nll_beta`` (0: plain NLL), ``variance_floor`` (1e-4, in
      training units).
    """

    @classmethod
    def inert_hparams(cls, hparams: Mapping[str, Any]) -> frozenset[str]:
        """Settings of a part that is switched off (weight 0, or the other contact head or
        head type), which therefore build the same model whatever their values."""
        inert: set[str] = set()
        if hparams["contact_weight"] == 0:
            inert |= {"contact_head", "contact_rank"}
        elif hparams["contact_head"] == "cosine":
            inert.add("contact_rank")
        if hparams["contrastive_weight"] == 0:
            inert |= {"tau", "complex_dim", "complex_layers", "rbf_size", "projection_dim"}
        if not hparams["probabilistic"]:
            inert |= {"nll_beta", "variance_floor"}
        return frozenset(inert)

    def __init__(
        self,
        node_in: int,
        edge_in: int,
        hidden_dim: int | None = None,
        edge_hidden_dim: int | None = None,
        message_passing_steps: int = 3,
        set2set_steps: int = 2,
        set2set_layers: int = 1,
        update: str = "linear",
        interaction: bool = True,
        latent_dim: int = 128,
        beta: float = 1e-3,
        contact_weight: float = 0.1,
        contact_head: str = "cosine",
        contact_rank: int = 32,
        contrastive_weight: float = 0.1,
        tau: float = 0.1,
        complex_dim: int = 32,
        complex_layers: int = 1,
        rbf_size: int = 16,
        projection_dim: int = 64,
        aux_weight: float = 0.1,
        alpb_input: bool = False,
        probabilistic: bool = True,
        nll_beta: float = 0.0,
        variance_floor: float = 1e-4,
    ) -> None:
        super().__init__()
        require_positive(
            latent_dim=latent_dim,
            tau=tau,
            complex_dim=complex_dim,
            complex_layers=complex_layers,
            rbf_size=rbf_size,
            projection_dim=projection_dim,
            variance_floor=variance_floor,
            contact_rank=contact_rank,
        )
        weights = {
            "beta": beta,
            "contact_weight": contact_weight,
            "contrastive_weight": contrastive_weight,
            "aux_weight": aux_weight,
        }
        negative = {k: v for k, v in weights.items() if not v >= 0}
        if negative:
            raise ValueError(f"must be >= 0: {negative}")
        if not 0.0 <= nll_beta <= 1.0:
            raise ValueError(f"nll_beta must be in [0, 1], not {nll_beta}")
        if contact_head not in CONTACT_HEADS:
            raise ValueError(f"contact_head must be one of {CONTACT_HEADS}, not {contact_head!r}")
        if contact_weight > 0 and contact_head == "cosine" and not interaction:
            raise ValueError(
                "contact_weight > 0 with contact_head: cosine trains the interaction map, which "
                "interaction=False removes; set contact_weight: 0 or contact_head: bilinear"
            )
        # CIGIN's encoders and readouts; the head is this model's own (below)
        backbone = self._build_backbone(
            node_in,
            edge_in,
            hidden_dim,
            edge_hidden_dim,
            message_passing_steps,
            set2set_steps,
            set2set_layers,
            update,
            interaction,
            predictor=False,
        )
        # CIGIN's head 8h -> 256 -> 128 -> 1 with the latent Gaussian after the first layer.
        self.to_hidden = nn.Sequential(nn.Linear(self.readout_dim, 256), nn.ReLU())
        self.to_mu = nn.Linear(256, latent_dim)
        self.trunk = nn.Sequential(nn.Linear(latent_dim, 128), nn.ReLU())
        self.mean_out = nn.Linear(128, 1)
        # Optional parts: each is initialized from its own seed, drawn once from the global
        # generator whatever the switches say, so that for one seed switching a part off leaves
        # the initial weights of every other part unchanged (the ablation compares like with like).
        part_seed = int(torch.randint(0, 2**62, ()))
        with _seeded(part_seed, 0):
            self.variance_out = nn.Linear(128, 1) if probabilistic else None
        self.to_logvar: nn.Linear | None = None
        if beta > 0:
            with _seeded(part_seed, 1):
                self.to_logvar = nn.Linear(256, latent_dim)
            # Start with a narrow posterior (sigma ~ 0.14): full-width noise on z at
            # initialization drowns the signal the head has to find first.
            nn.init.constant_(self.to_logvar.bias, -4.0)
        self.contact_scale: nn.Parameter | None = None
        self.contact_bias: nn.Parameter | None = None
        self.contact_head: ContactHead | None = None
        if contact_weight > 0 and contact_head == "cosine":
            # cosine in [-1, 1] -> contact logit; contacts are rare, hence the negative bias
            self.contact_scale = nn.Parameter(torch.tensor(4.0))
            self.contact_bias = nn.Parameter(torch.tensor(CONTACT_BIAS_INIT))
        elif contact_weight > 0:
            with _seeded(part_seed, 4):
                self.contact_head = ContactHead(backbone["hidden_dim"], contact_rank)
        self.aux_head: nn.Module | None = None
        if aux_weight > 0:
            with _seeded(part_seed, 2):
                self.aux_head = nn.Sequential(
                    nn.Linear(latent_dim, 64), nn.ReLU(), nn.Linear(64, len(AUX_TARGETS))
                )
        self.complex_encoder: ComplexEncoder | None = None
        self.pair_projection: nn.Module | None = None
        self.complex_projection: nn.Module | None = None
        if contrastive_weight > 0:
            with _seeded(part_seed, 3):
                self.complex_encoder = ComplexEncoder(
                    complex_dim, complex_layers, rbf_size, COMPLEX_GRAPH_CUTOFF_ANGSTROM
                )
                self.pair_projection = nn.Sequential(
                    nn.Linear(latent_dim, projection_dim),
                    nn.ReLU(),
                    nn.Linear(projection_dim, projection_dim),
                )
                self.complex_projection = nn.Sequential(
                    nn.Linear(complex_dim, projection_dim),
                    nn.ReLU(),
                    nn.Linear(projection_dim, projection_dim),
                )
        self.input_proj: nn.Linear | None = None
        if alpb_input:  # [value / scale, missing] per input, added before the first ReLU
            # under a seed of its own, as every optional part: the global generator, and so
            # everything drawn after, stays as without it
            with _seeded(part_seed, 5):
                self.input_proj = nn.Linear(2 * len(INPUT_SWITCHES["alpb_input"]), 256)
            nn.init.zeros_(self.input_proj.weight)
            nn.init.zeros_(self.input_proj.bias)
        self.hparams = {
            **backbone,
            "interaction": interaction,
            "latent_dim": latent_dim,
            "beta": beta,
            "contact_weight": contact_weight,
            "contact_head": contact_head,
            "contact_rank": contact_rank,
            "contrastive_weight": contrastive_weight,
            "tau": tau,
            "complex_dim": complex_dim,
            "complex_layers": complex_layers,
            "rbf_size": rbf_size,
            "projection_dim": projection_dim,
            "aux_weight": aux_weight,
            "alpb_input": alpb_input,
            "probabilistic": probabilistic,
            "nll_beta": nll_beta,
            "variance_floor": variance_floor,
        }
        self.interaction = interaction
        self.beta, self.tau = beta, tau
        self.contact_weight, self.contrastive_weight, self.aux_weight = (
            contact_weight,
            contrastive_weight,
            aux_weight,
        )
        self.probabilistic, self.nll_beta, self.variance_floor = (
            probabilistic,
            nll_beta,
            variance_floor,
        )

    # ------------------------------------------------------------------------------- inference

    def _input_features(self, inputs: torch.Tensor | None, batch_size: int) -> torch.Tensor:
        """[B, 2k]: each input over its scale (0 where missing), then the missing flags."""
        names = self.input_names(self.hparams)
        if inputs is None:
            raise ValueError(
                f"this ProbPair reads {', '.join(names)} per pair (alpb_input: true) and was "
                "given none; evaluate builds them from the descriptor table (--descriptors)"
            )
        if tuple(inputs.shape) != (batch_size, len(names)):
            raise ValueError(
                f"inputs of shape {tuple(inputs.shape)}; expected ({batch_size}, {len(names)}): "
                f"one row per pair, columns {names}"
            )
        missing = torch.isnan(inputs)
        values = torch.where(missing, torch.zeros_like(inputs), inputs / ALPB_INPUT_SCALE_KCAL_MOL)
        return torch.cat([values, missing.to(values.dtype)], dim=1)

    def forward(
        self,
        solute_bg: dgl.DGLGraph,
        solvent_bg: dgl.DGLGraph,
        inputs: torch.Tensor | None = None,
    ) -> ProbPairOutput:
        if inputs is not None and self.input_proj is None:
            raise ValueError("this ProbPair reads no per-pair inputs (alpb_input: false)")
        hu, hv = (F.normalize(h, dim=1) for h in self._encode(solute_bg, solvent_bg))
        solute_layout, solvent_layout = NodeLayout.of(solute_bg), NodeLayout.of(solvent_bg)
        contact_logits = contact_mask = None
        if self.contact_head is not None and self.training:
            # a training-only term: inference never reads the contacts
            contact_logits = self.contact_head(solute_layout.pad(hu), solvent_layout.pad(hv))
            contact_mask = solute_layout.mask.unsqueeze(2) & solvent_layout.mask.unsqueeze(1)
        imap = mask = None
        if self.interaction:
            inter = interact(hu, hv, solute_layout, solvent_layout, False)
            hu = torch.cat([hu, inter.solute_prime], dim=1)
            hv = torch.cat([hv, inter.solvent_prime], dim=1)
            imap, mask = inter.imap, inter.mask
        gu = self.set2set_solute(solute_bg, hu)
        gv = self.set2set_solvent(solvent_bg, hv)
        readout = torch.cat([gu, gv], dim=1)
        if self.input_proj is None:
            hidden = self.to_hidden(readout)
        else:  # = to_hidden on [readout, input features], with the inputs' weights on their own
            linear, activation = self.to_hidden
            features = self._input_features(inputs, readout.shape[0])
            hidden = activation(linear(readout) + self.input_proj(features))
        mu = self.to_mu(hidden)
        logvar = self.to_logvar(hidden) if self.to_logvar is not None else None
        z = mu
        kl = mu.new_zeros(())
        if self.training and logvar is not None:
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            kl = 0.5 * torch.sum(mu**2 + torch.exp(logvar) - 1.0 - logvar, dim=1).mean()
        trunk = self.trunk(z)
        prediction = self.mean_out(trunk).squeeze(-1)
        variance = None
        if self.variance_out is not None:
            variance = F.softplus(self.variance_out(trunk).squeeze(-1)) + self.variance_floor
        aux: dict[str, torch.Tensor] = {"kl": kl.detach()}
        if imap is not None and mask is not None:
            aux.update(interaction_map=imap.detach(), interaction_mask=mask)
        if logvar is not None:
            aux["latent_std"] = torch.exp(0.5 * logvar).mean(dim=1).detach()  # per pair
        return ProbPairOutput(
            prediction=prediction,
            aux_loss=self.beta * kl,
            aux=aux,
            variance=variance,
            interaction_map=imap,
            interaction_mask=mask,
            contact_logits=contact_logits,
            contact_mask=contact_mask,
            mu=mu,
            logvar=logvar,
            z=z,
        )

    # -------------------------------------------------------------------------------- training

    def training_loss(
        self, output: ModelOutput, batch: object, y: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """main (Gaussian NLL or MSE) + contact + contrastive + aux + beta KL.

        The named terms are the weighted contributions (they sum to the loss). A term whose weight
        is 0, or whose supervision the batch lacks, is exactly 0.
        """
        if not isinstance(output, ProbPairOutput):
            raise TypeError(f"ProbPair.training_loss needs a ProbPairOutput, not {type(output)}")
        y = y.reshape(-1).to(output.prediction.dtype)
        zero = output.prediction.new_zeros(())
        terms = {"main": self.main_loss(output, y)}
        supervision = getattr(batch, "supervision", None)
        terms["contact"] = (
            self.contact_weight * self.contact_loss(output, supervision)
            if self.contact_weight > 0
            else zero
        )
        terms["contrastive"] = (
            self.contrastive_weight * self.contrastive_loss(output, supervision)
            if self.contrastive_weight > 0
            else zero
        )
        terms["aux"] = (
            self.aux_weight * self.aux_targets_loss(output, supervision)
            if self.aux_weight > 0
            else zero
        )
        terms["kl"] = output.aux_loss  # beta KL (0 in eval mode and for beta = 0)
        loss = terms["main"] + terms["contact"] + terms["contrastive"] + terms["aux"] + terms["kl"]
        return loss, {name: float(value.detach()) for name, value in terms.items()}

    def main_loss(self, output: ModelOutput, y: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL per pair without the constant log(2 pi)/2 (beta-NLL weighted when
        ``nll_beta > 0``), averaged; MSE for the point-prediction head."""
        mean = output.prediction.reshape(-1)
        if output.variance is None:
            return F.mse_loss(mean, y)
        variance = output.variance.reshape(-1)
        nll = 0.5 * (torch.log(variance) + (y - mean) ** 2 / variance)
        if self.nll_beta > 0:
            # Seitzer et al. 2022: var^beta (no gradient) undoes NLL's down-weighting of the
            # mean's gradient on high-variance points.
            nll = nll * variance.detach() ** self.nll_beta
        return nll.mean()

    def contact_loss(self, output: ProbPairOutput, supervision: object | None) -> torch.Tensor:
        """Binary cross-entropy of the contact logits (affine in the interaction map, or the
        bilinear head's) against the contact fractions, averaged over the entries of the pairs
        that have a map."""
        zero = output.prediction.new_zeros(())
        maps = getattr(supervision, "contact_maps", None)
        if self.contact_head is not None:
            logits_map, own_mask = output.contact_logits, output.contact_mask
        else:
            assert self.contact_scale is not None and self.contact_bias is not None
            logits_map, own_mask = output.interaction_map, output.interaction_mask
        if maps is None or logits_map is None or own_mask is None:
            return zero
        if maps.shape != logits_map.shape:
            raise ValueError(
                f"contact maps {tuple(maps.shape)} do not match the solute x solvent atoms "
                f"{tuple(logits_map.shape)}: were they collated with these graphs?"
            )
        mask = supervision.contact_mask & own_mask  # type: ignore[union-attr]
        if not bool(mask.any()):
            return zero
        logits = logits_map[mask]
        if self.contact_head is None:
            logits = self.contact_scale * logits + self.contact_bias
        return F.binary_cross_entropy_with_logits(logits, maps[mask].to(logits.dtype))

    def contrastive_loss(self, output: ProbPairOutput, supervision: object | None) -> torch.Tensor:
        """InfoNCE of each optimized complex against its own pair's decoys (pairs without decoys
        or without complexes add nothing)."""
        zero = output.prediction.new_zeros(())
        complexes = getattr(supervision, "complexes", None)
        decoys = getattr(supervision, "decoys", None)
        if complexes is None or decoys is None or output.z is None:
            return zero
        assert self.complex_encoder is not None
        assert self.pair_projection is not None and self.complex_projection is not None
        complex_pair = supervision.complex_pair  # type: ignore[union-attr]
        decoy_pair = supervision.decoy_pair  # type: ignore[union-attr]
        n_pairs = output.z.shape[0]
        has_decoys = torch.zeros(n_pairs, dtype=torch.bool, device=output.z.device)
        has_decoys[decoy_pair] = True
        anchored = has_decoys[complex_pair]
        if not bool(anchored.any()):
            return zero
        pair = F.normalize(self.pair_projection(output.z), dim=1)
        positive = F.normalize(self.complex_projection(self.complex_encoder(complexes)), dim=1)
        negative = F.normalize(self.complex_projection(self.complex_encoder(decoys)), dim=1)
        pos_score = (pair[complex_pair] * positive).sum(dim=1) / self.tau  # [C]
        neg_score = (pair[decoy_pair] * negative).sum(dim=1) / self.tau  # [D]
        neg_lse = _segment_logsumexp(neg_score, decoy_pair, n_pairs)  # [B]
        # -log softmax of the positive among {positive, own decoys}
        per_complex = torch.logaddexp(pos_score, neg_lse[complex_pair]) - pos_score
        return per_complex[anchored].mean()

    def aux_targets_loss(self, output: ProbPairOutput, supervision: object | None) -> torch.Tensor:
        """MSE of the auxiliary-target head over the (pair, target) entries that exist."""
        zero = output.prediction.new_zeros(())
        targets = getattr(supervision, "aux_targets", None)
        if targets is None or output.z is None:
            return zero
        assert self.aux_head is not None
        mask = supervision.aux_mask.to(output.z.dtype)  # type: ignore[union-attr]
        if targets.shape != (output.z.shape[0], len(AUX_TARGETS)):
            raise ValueError(
                f"auxiliary targets {tuple(targets.shape)}, expected "
                f"({output.z.shape[0]}, {len(AUX_TARGETS)}) (AUX_TARGETS)"
            )
        # a target the model also reads as an input would be a copy task: it is left out
        read = self.input_names(self.hparams)
        keep = torch.tensor([name not in read for name in AUX_TARGETS], device=mask.device)
        mask = mask * keep.to(mask.dtype)
        count = mask.sum()
        if float(count) == 0:
            return zero
        error = (self.aux_head(output.z) - targets.to(output.z.dtype)) ** 2
        return (error * mask).sum() / count


class ContactHead(nn.Module):
    """Contact logits of every (solute atom i, solvent atom j) of a pair from the two atoms'
    states: ``a . u_i + b . v_j + (P u_i) . (Q v_j) / sqrt(rank) + bias``.

    The unary terms are the logistic regression on the two atoms' features that
    ``bench/loss_terms.py`` measures as a reference; the low-rank bilinear term lets a contact
    depend on the two atoms together. The unary weights start at 0 and the bias at
    ``CONTACT_BIAS_INIT``, so the head starts near a constant rate rather than at noise.
    """

    def __init__(self, dim: int, rank: int) -> None:
        super().__init__()
        self.solute_unary = nn.Linear(dim, 1, bias=False)
        self.solvent_unary = nn.Linear(dim, 1, bias=False)
        nn.init.zeros_(self.solute_unary.weight)
        nn.init.zeros_(self.solvent_unary.weight)
        self.solute_projection = nn.Linear(dim, rank, bias=False)
        self.solvent_projection = nn.Linear(dim, rank, bias=False)
        self.bias = nn.Parameter(torch.tensor(CONTACT_BIAS_INIT))
        self.scale = 1.0 / math.sqrt(rank)

    def forward(self, solute: torch.Tensor, solvent: torch.Tensor) -> torch.Tensor:
        """Padded atom states [B, M_u, D] and [B, M_v, D] -> logits [B, M_u, M_v] (padding
        entries are not meaningful: mask them)."""
        pairwise = torch.bmm(
            self.solute_projection(solute), self.solvent_projection(solvent).transpose(1, 2)
        )
        return (
            self.scale * pairwise
            + self.solute_unary(solute)  # [B, M_u, 1]
            + self.solvent_unary(solvent).transpose(1, 2)  # [B, 1, M_v]
            + self.bias
        )


@contextlib.contextmanager
def _seeded(seed: int, part: int) -> Iterator[None]:
    """Run the block with the CPU generator seeded from (seed, part), then restore its state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed((seed + 7919 * part) % 2**63)
        yield


def _segment_logsumexp(values: torch.Tensor, segment: torch.Tensor, n: int) -> torch.Tensor:
    """logsumexp of ``values`` [K] per segment id in ``0..n-1`` -> [n]; a segment without values
    gets a large negative number (finite, so that masked-out rows give no NaN gradients)."""
    peak = torch.full((n,), -torch.inf, dtype=values.dtype, device=values.device)
    peak = peak.scatter_reduce(0, segment, values.detach(), reduce="amax", include_self=True)
    peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
    total = values.new_zeros(n).index_add(0, segment, torch.exp(values - peak[segment]))
    return peak + torch.log(total.clamp_min(torch.finfo(values.dtype).tiny))


# ------------------------------------------------------------------------------------------
# The 3D encoder of the sample complexes (training only)
# ------------------------------------------------------------------------------------------


class ShiftedSoftplus(nn.Module):
    """SchNet's activation: softplus(x) - log 2 (zero at zero)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.softplus(x) - _LOG2


class ContinuousFilterConv(nn.Module):
    """SchNet's interaction block (Schuett et al. 2017): ``h + f2out(sum_j in2f(h_j) * W(d_ij))``,
    the filter ``W`` a two-layer network of the RBF expansion of the distance times the cutoff
    envelope."""

    def __init__(self, dim: int, rbf_size: int) -> None:
        super().__init__()
        self.filter = nn.Sequential(
            nn.Linear(rbf_size, dim), ShiftedSoftplus(), nn.Linear(dim, dim)
        )
        self.in2f = nn.Linear(dim, dim, bias=False)
        self.f2out = nn.Sequential(nn.Linear(dim, dim), ShiftedSoftplus(), nn.Linear(dim, dim))

    def forward(
        self, graph: dgl.DGLGraph, h: torch.Tensor, rbf: torch.Tensor, envelope: torch.Tensor
    ) -> torch.Tensor:
        messages = h.new_zeros(h.shape)
        if graph.num_edges():
            weights = self.filter(rbf) * envelope
            messages = dgl.ops.u_mul_e_sum(graph, self.in2f(h), weights)
        return h + self.f2out(messages)


class ComplexEncoder(nn.Module):
    """A distance-aware encoder of 3D complex graphs (``PairSupervision.complexes``/``decoys``:
    node data ``z``, ``fragment``; edge data ``distance_angstrom``) -> one vector per graph
    [n_graphs, dim], the mean over its atoms.

    The first interaction is a SchNet continuous-filter convolution whose filter is *linear* in
    the RBF expansion and specific to the neighbour's class (element class x same/other fragment).
    Its input ``h_j`` (an embedding of the neighbour's class) then takes a few values only, so
    ``sum_j W_class(j)(d_ij) h_j`` equals a linear map of the per-atom radial descriptor
    ``R[i, class, k] = sum_{j in class} rbf_k(d_ij) envelope(d_ij)`` (Behler-Parrinello radial
    symmetry functions per neighbour class). The descriptor has no parameters, so the per-edge
    work is one table lookup and one scatter, with nothing to differentiate per edge: a batch of
    32 pairs x 16 sample graphs has ~160k edges against ~600 in the two molecular graphs, and full
    SchNet layers there cost 10x a CIGIN step. ``layers - 1`` full SchNet blocks
    (``ContinuousFilterConv``, learned per-edge filters on the learned atom states) follow, at
    that cost. The cosine envelope takes every filter smoothly to 0 at the cutoff, so an atom
    crossing it does not make the embedding jump.
    """

    def __init__(self, dim: int, layers: int, rbf_size: int, cutoff_angstrom: float) -> None:
        super().__init__()
        self.cutoff_angstrom = float(cutoff_angstrom)
        self.rbf_size = rbf_size
        self.atom_embedding = nn.Embedding(MAX_ATOMIC_NUMBER + 1, dim)
        self.fragment_embedding = nn.Embedding(N_FRAGMENT_KINDS, dim)
        element_class = torch.full((MAX_ATOMIC_NUMBER + 1,), len(ELEMENT_CLASSES))
        element_class[list(ELEMENT_CLASSES)] = torch.arange(len(ELEMENT_CLASSES))
        self.register_buffer("element_class", element_class, persistent=False)
        self.n_classes = 2 * (len(ELEMENT_CLASSES) + 1)  # x (same, other fragment)
        # RBF and envelope tabulated on a fine distance grid and looked up per edge (nearest
        # grid point): the expansion has no parameters, and exp/cos over [E, rbf_size] cost as
        # much as the rest of the encoder.
        self.grid_points = RBF_GRID_STEPS_PER_SPACING * max(rbf_size - 1, 1) + 1
        grid = torch.linspace(0.0, self.cutoff_angstrom, self.grid_points)
        rbf, envelope = gaussian_rbf(grid, rbf_size, self.cutoff_angstrom)
        self.register_buffer("rbf_table", rbf, persistent=False)
        self.register_buffer("envelope_table", envelope, persistent=False)
        self.register_buffer("radial_table", rbf * envelope, persistent=False)
        self.radial = nn.Linear(self.n_classes * rbf_size, dim)
        self.radial_out = nn.Sequential(ShiftedSoftplus(), nn.Linear(dim, dim))
        self.convs = nn.ModuleList(ContinuousFilterConv(dim, rbf_size) for _ in range(layers - 1))

    def grid_index(self, distance_angstrom: torch.Tensor) -> torch.Tensor:
        """Row of the tables nearest to each distance [E] (distances past the cutoff -> the last
        row, where the envelope is 0)."""
        step = self.cutoff_angstrom / (self.grid_points - 1)
        index = torch.round(distance_angstrom.reshape(-1) / step).long()
        return index.clamp_(0, self.grid_points - 1)

    def radial_descriptor(self, graph: dgl.DGLGraph, grid_index: torch.Tensor) -> torch.Tensor:
        """R [N, n_classes * rbf_size]: per atom, the enveloped RBF sums over its neighbours of
        each class (in-edges; the graphs hold both directions)."""
        z = graph.ndata["z"].long().clamp(0, MAX_ATOMIC_NUMBER)
        fragment = graph.ndata["fragment"].long()
        src, dst = graph.edges()
        other = (fragment[src] != fragment[dst]).long()
        cls = 2 * self.element_class[z[src]] + other
        rows = self.radial_table.new_zeros(graph.num_nodes() * self.n_classes, self.rbf_size)
        rows.index_add_(
            0, dst * self.n_classes + cls, self.radial_table.index_select(0, grid_index)
        )
        return rows.view(graph.num_nodes(), self.n_classes * self.rbf_size)

    def forward(self, graph: dgl.DGLGraph) -> torch.Tensor:
        z = graph.ndata["z"].long().clamp(0, MAX_ATOMIC_NUMBER)
        fragment = graph.ndata["fragment"].long().clamp(0, N_FRAGMENT_KINDS - 1)
        h = self.atom_embedding(z) + self.fragment_embedding(fragment)
        grid_index = self.grid_index(graph.edata["distance_angstrom"])
        h = h + self.radial_out(self.radial(self.radial_descriptor(graph, grid_index)))
        if self.convs:
            rbf = self.rbf_table.index_select(0, grid_index)
            envelope = self.envelope_table.index_select(0, grid_index)
            for conv in self.convs:
                h = conv(graph, h, rbf, envelope)
        return dgl.ops.segment_reduce(graph.batch_num_nodes(), h, "mean")


def gaussian_rbf(
    distance_angstrom: torch.Tensor, size: int, cutoff_angstrom: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Gaussian RBF expansion [E, size] (centres evenly from 0 to the cutoff, each one spacing
    wide, so neighbours overlap) and the cosine cutoff envelope [E, 1] (1 at 0, 0 from the
    cutoff on) of distances."""
    d = distance_angstrom.reshape(-1, 1).to(torch.float32)
    centers = torch.linspace(0.0, cutoff_angstrom, size)
    spacing = cutoff_angstrom / max(size - 1, 1)
    rbf = torch.exp(-0.5 * ((d - centers) / spacing) ** 2)
    inside = (d < cutoff_angstrom).to(d.dtype)
    envelope = 0.5 * (torch.cos(math.pi * d / cutoff_angstrom) + 1.0) * inside
    return rbf, envelope
