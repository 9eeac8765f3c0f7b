"""ProbPair (pairfactory.ml.models.probpair): the loss terms and their switches, inference without
samples, σ, the contrastive task's composition shortcut, overfitting real pairs with every term on,
checkpoints."""

from __future__ import annotations

from pathlib import Path

import dgl
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pairfactory.errors import UserError
from pairfactory.ml.datasets import (
    AUX_TARGETS,
    COMPLEX_GRAPH_CUTOFF_ANGSTROM,
    PairItem,
    PairSupervision,
    collate_pairs,
)
from pairfactory.ml.graph_cache import GraphCache
from pairfactory.ml.models import build_model, default_hparams
from pairfactory.ml.models.probpair import (
    ComplexEncoder,
    ProbPair,
    ProbPairOutput,
    _segment_logsumexp,
    gaussian_rbf,
)
from pairfactory.ml.train import load_weights, save_weights

torch.set_num_threads(1)
REPO_ROOT = Path(__file__).resolve().parents[2]
FREESOLV = REPO_ROOT / "data" / "freesolv" / "database.txt"
PAIRS = [
    ("c1ccc2ccccc2c1O", "CCO", -7.0),
    ("CC(=O)N", "ClC(Cl)Cl", -5.0),
    ("[Na+]", "O", -90.0),
    ("C[C@H](N)C(=O)Oc1ccccc1/C=C/Cl", "CS(C)=O", -10.0),
    ("O", "CCCCCCCC", -2.0),
]
TERMS = ("main", "contact", "contrastive", "aux", "kl")


@pytest.fixture(scope="module")
def cache() -> GraphCache:
    return GraphCache(None)


# ------------------------------------------------------------------------- synthetic samples


def complex_graph(z: np.ndarray, fragment: np.ndarray, xyz: np.ndarray) -> dgl.DGLGraph:
    """A 3D complex graph as ``PairSupervision`` describes it: ``z``, ``fragment`` per node, an
    edge both ways for every atom pair closer than the cutoff, ``distance_angstrom`` [E, 1]."""
    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    src, dst = np.nonzero(d < COMPLEX_GRAPH_CUTOFF_ANGSTROM)
    graph = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=len(z))
    graph.ndata["z"] = torch.as_tensor(z, dtype=torch.int64)
    graph.ndata["fragment"] = torch.as_tensor(fragment, dtype=torch.int64)
    graph.edata["distance_angstrom"] = torch.from_numpy(d[src, dst].astype(np.float32))[:, None]
    return graph


def atoms_of(solute: dgl.DGLGraph, solvent: dgl.DGLGraph, rng: np.random.Generator):
    """Atomic numbers and fragments of a complex with one copy of each molecule (random elements,
    the graphs' atom counts)."""
    n_u, n_v = solute.num_nodes(), solvent.num_nodes()
    z = rng.choice([1, 6, 7, 8, 17], size=n_u + n_v)
    fragment = np.concatenate([np.zeros(n_u, dtype=np.int64), np.ones(n_v, dtype=np.int64)])
    return z, fragment


def arrangement(n_u: int, n_v: int, rng: np.random.Generator, contact: bool) -> np.ndarray:
    """Solute atoms in a small ball; the solvent near the solute (contact) or farther away."""
    solute = rng.normal(scale=1.2, size=(n_u, 3))
    offset = rng.normal(size=3)
    offset *= (3.0 if contact else 5.5) / np.linalg.norm(offset)
    solvent = offset + rng.normal(scale=0.8, size=(n_v, 3))
    return np.concatenate([solute, solvent])


def synthetic_supervision(
    solute: dgl.DGLGraph,
    solvent: dgl.DGLGraph,
    rng: np.random.Generator,
    n_complexes: int = 3,
    n_decoys: int = 3,
    parts: tuple[str, ...] = ("aux", "contact", "samples"),
) -> PairSupervision:
    n_u, n_v = solute.num_nodes(), solvent.num_nodes()
    z, fragment = atoms_of(solute, solvent, rng)
    sup = PairSupervision()
    if "aux" in parts:
        sup.aux_targets = rng.normal(size=len(AUX_TARGETS)).astype(np.float32)
        sup.aux_targets[rng.integers(len(AUX_TARGETS))] = np.nan  # one missing target
    if "contact" in parts:
        fractions = rng.uniform(size=(n_u, n_v)) * (rng.uniform(size=(n_u, n_v)) < 0.3)
        sup.contact_map = fractions.astype(np.float32)
    if "samples" in parts:
        sup.complexes = [
            complex_graph(z, fragment, arrangement(n_u, n_v, rng, True)) for _ in range(n_complexes)
        ]
        sup.decoys = [
            complex_graph(z, fragment, arrangement(n_u, n_v, rng, False)) for _ in range(n_decoys)
        ]
    return sup


def supervised_batch(cache: GraphCache, pairs=PAIRS, seed: int = 0, **kwargs):
    rng = np.random.default_rng(seed)
    items = []
    for i, (u, v, y) in enumerate(pairs):
        gu, gv = cache.get(u), cache.get(v)
        items.append(PairItem(gu, gv, y, i, synthetic_supervision(gu, gv, rng, **kwargs)))
    return collate_pairs(items)


def plain_batch(cache: GraphCache, pairs=PAIRS):
    return collate_pairs(
        [PairItem(cache.get(u), cache.get(v), y, i) for i, (u, v, y) in enumerate(pairs)]
    )


def fresh(name: str = "probpair", seed: int = 0, **hp) -> ProbPair:
    torch.manual_seed(seed)
    model = build_model(name, **hp)
    assert isinstance(model, ProbPair)
    return model


def train_terms(model: ProbPair, batch, seed: int = 11) -> tuple[torch.Tensor, dict[str, float]]:
    model.train()
    torch.manual_seed(seed)  # the same draw of z for every model compared
    out = model(batch.solute, batch.solvent)
    y = (batch.y - batch.y.mean()) / batch.y.std()
    return model.training_loss(out, batch, y)


# ----------------------------------------------------------------------------------- registry


def test_registry_entries_defaults_and_errors():
    full = default_hparams("probpair")
    assert (full["message_passing_steps"], full["hidden_dim"], full["probabilistic"]) == (
        3,
        None,
        True,
    )
    assert full["beta"] == 1e-3 and full["interaction"] is True
    assert {full["contact_weight"], full["contrastive_weight"], full["aux_weight"]} == {0.1}
    twin = default_hparams("probpair_2d")
    assert not {"contact_weight", "contrastive_weight", "aux_weight"} & set(twin)
    model = build_model("probpair_2d")
    assert model.complex_encoder is None and model.aux_head is None
    assert model.contact_scale is None
    assert build_model("probpair_2d", **model.hparams).hparams == model.hparams
    with pytest.raises(UserError, match="contradicts"):
        build_model("probpair_2d", aux_weight=0.5)
    with pytest.raises(UserError, match="interaction=False"):
        build_model("probpair", interaction=False)
    with pytest.raises(UserError, match=">= 0"):
        build_model("probpair", beta=-1.0)
    with pytest.raises(UserError, match="nll_beta"):
        build_model("probpair", nll_beta=2.0)
    ablated = build_model("probpair", interaction=False, contact_weight=0.0)
    assert ablated.set2set_solute.input_dim == ablated.hparams["hidden_dim"]


# ------------------------------------------------------------------------------ loss and terms


def test_loss_is_the_sum_of_its_terms_and_every_term_is_active(cache):
    batch = supervised_batch(cache)
    loss, terms = train_terms(fresh(), batch)
    assert set(terms) == set(TERMS)
    assert all(terms[name] != 0.0 for name in TERMS), terms
    assert float(loss) == pytest.approx(sum(terms.values()), rel=1e-6)
    loss.backward()


@pytest.mark.parametrize("head", ["cosine", "bilinear"])
@pytest.mark.parametrize(
    "switch,term",
    [
        ({"contact_weight": 0.0}, "contact"),
        ({"contrastive_weight": 0.0}, "contrastive"),
        ({"aux_weight": 0.0}, "aux"),
    ],
)
def test_each_weight_removes_only_its_own_term(cache, switch, term, head):
    batch = supervised_batch(cache)
    _, full = train_terms(fresh(seed=5, contact_head=head), batch)
    _, ablated = train_terms(fresh(seed=5, contact_head=head, **switch), batch)
    assert full[term] > 0.0 and ablated[term] == 0.0
    for other in TERMS:
        if other != term:
            assert ablated[other] == full[other], other


def test_point_prediction_switch_changes_only_the_main_term(cache):
    batch = supervised_batch(cache)
    model = fresh(seed=5)
    _, full = train_terms(model, batch)
    point = fresh(seed=5, probabilistic=False)
    loss, ablated = train_terms(point, batch)
    for other in ("contact", "contrastive", "aux", "kl"):
        assert ablated[other] == full[other], other
    out = point(batch.solute, batch.solvent)
    assert out.variance is None
    y = (batch.y - batch.y.mean()) / batch.y.std()
    torch.manual_seed(11)
    out = point(batch.solute, batch.solvent)
    assert ablated["main"] == pytest.approx(float(F.mse_loss(out.prediction, y)), rel=1e-6)


def test_beta_zero_is_deterministic_and_has_no_kl(cache):
    batch = supervised_batch(cache)
    model = fresh(beta=0.0)
    assert model.to_logvar is None
    _, terms = train_terms(model, batch)
    assert terms["kl"] == 0.0
    model.train()
    a = model(batch.solute, batch.solvent)
    b = model(batch.solute, batch.solvent)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.z, a.mu)
    # with beta > 0 training draws z, evaluation does not
    noisy = fresh(beta=0.1).train()
    out = noisy(batch.solute, batch.solvent)
    assert not torch.equal(out.z, out.mu)
    out = noisy.eval()(batch.solute, batch.solvent)
    assert torch.equal(out.z, out.mu)


def test_nll_main_term_and_beta_nll_weighting(cache):
    batch = plain_batch(cache)
    y = torch.linspace(-1, 1, len(batch))
    for nll_beta in (0.0, 0.5):
        model = fresh(nll_beta=nll_beta).eval()
        out = model(batch.solute, batch.solvent)
        var = out.variance
        nll = 0.5 * (torch.log(var) + (y - out.prediction) ** 2 / var)
        expected = (nll * var.detach() ** nll_beta).mean()
        torch.testing.assert_close(model.main_loss(out, y), expected)
    reference = F.gaussian_nll_loss(out.prediction, y, out.variance, eps=1e-12)
    torch.testing.assert_close(fresh().main_loss(out, y), reference)


def test_without_supervision_the_model_trains_as_its_2d_twin(cache):
    """No samples: every supervision term is exactly 0 and the loss (and its gradient on the
    shared weights) is the 2D twin's, same seed."""
    batch = plain_batch(cache)
    assert batch.supervision is None
    full, twin = fresh(seed=2), fresh("probpair_2d", seed=2)
    loss_full, terms_full = train_terms(full, batch)
    loss_twin, terms_twin = train_terms(twin, batch)
    assert terms_full == terms_twin
    assert terms_full["contact"] == terms_full["contrastive"] == terms_full["aux"] == 0.0
    loss_full.backward()
    loss_twin.backward()
    shared = dict(twin.named_parameters())
    for name, p in full.named_parameters():
        if name in shared:
            torch.testing.assert_close(p.grad, shared[name].grad, rtol=0, atol=0)
        else:  # the parts only supervision trains get no gradient
            assert p.grad is None or not p.grad.any(), name


def test_partial_supervision_only_pairs_that_have_it_count(cache):
    """Pairs without samples, without decoys, without a contact map or aux targets: the terms are
    finite, the gradients too, and a pair's term does not depend on the others' missing parts."""
    rng = np.random.default_rng(3)
    items = []
    for i, (u, v, y) in enumerate(PAIRS):
        gu, gv = cache.get(u), cache.get(v)
        parts = [("aux", "contact", "samples"), ("aux",), (), ("contact",), ("samples",)][i]
        items.append(PairItem(gu, gv, y, i, synthetic_supervision(gu, gv, rng, parts=parts)))
    items[0].supervision.decoys = []  # pair 0: complexes but no decoys -> not in the InfoNCE
    batch = collate_pairs(items)
    model = fresh()
    loss, terms = train_terms(model, batch)
    assert all(np.isfinite(list(terms.values())))
    assert terms["contrastive"] > 0 and terms["contact"] > 0 and terms["aux"] > 0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)

    # the contrastive term is pair 4's alone (pair 0 has no decoys)
    alone = collate_pairs([items[4]])
    model.train()
    torch.manual_seed(0)
    out = model(batch.solute, batch.solvent)
    out_alone = ProbPairOutput(
        prediction=out.prediction[4:],
        aux_loss=out.aux_loss,
        z=out.z[4:],
    )
    torch.testing.assert_close(
        model.contrastive_loss(out, batch.supervision),
        model.contrastive_loss(out_alone, alone.supervision),
    )


def pair_by_pair_contact_bce(batch, logits_of) -> torch.Tensor:
    """The contact loss computed pair by pair: BCE of ``logits_of(b, n_solute, n_solvent)``
    against pair b's contact fractions, averaged over every pair's entries."""
    expected = []
    for b in range(len(batch)):
        n_u = int(batch.solute.batch_num_nodes()[b])
        n_v = int(batch.solvent.batch_num_nodes()[b])
        expected.append(
            F.binary_cross_entropy_with_logits(
                logits_of(b, n_u, n_v),
                batch.supervision.contact_maps[b, :n_u, :n_v],
                reduction="none",
            ).reshape(-1)
        )
    return torch.cat(expected).mean()


def test_contact_loss_equals_masked_bce_of_the_affine_map(cache):
    batch = supervised_batch(cache)
    model = fresh()
    out = model.train()(batch.solute, batch.solvent)

    def logits(b: int, n_u: int, n_v: int) -> torch.Tensor:
        return model.contact_scale * out.interaction_map[b, :n_u, :n_v] + model.contact_bias

    torch.testing.assert_close(
        model.contact_loss(out, batch.supervision),
        pair_by_pair_contact_bce(batch, logits),
        rtol=1e-5,
        atol=1e-6,
    )


def test_bilinear_contact_head_is_its_own_term_over_the_atom_states(cache):
    """The bilinear head: a . u_i + b . v_j + (P u_i) . (Q v_j) / sqrt(rank) + bias per entry,
    BCE over the entries with a map; inference computes no contact logits; the other terms are
    those of the cosine head (same seed), and it needs no interaction map."""
    batch = supervised_batch(cache)
    model = fresh(seed=5, contact_head="bilinear", contact_rank=4)
    assert model.contact_scale is None and model.contact_head is not None
    head = model.contact_head
    with torch.no_grad():  # the unary weights start at 0: give them values the check can see
        torch.nn.init.normal_(head.solute_unary.weight)
        torch.nn.init.normal_(head.solvent_unary.weight)
    torch.manual_seed(11)
    out = model.train()(batch.solute, batch.solvent)
    hu, hv = (F.normalize(h, dim=1) for h in model._encode(batch.solute, batch.solvent))
    solute_starts = torch.cumsum(batch.solute.batch_num_nodes(), 0) - batch.solute.batch_num_nodes()
    solvent_starts = (
        torch.cumsum(batch.solvent.batch_num_nodes(), 0) - batch.solvent.batch_num_nodes()
    )

    def logits(b: int, n_u: int, n_v: int) -> torch.Tensor:
        u = hu[int(solute_starts[b]) : int(solute_starts[b]) + n_u]
        v = hv[int(solvent_starts[b]) : int(solvent_starts[b]) + n_v]
        entries = torch.zeros(n_u, n_v)
        for i in range(n_u):
            for j in range(n_v):
                entries[i, j] = (
                    head.solute_unary(u[i]).squeeze()
                    + head.solvent_unary(v[j]).squeeze()
                    + head.solute_projection(u[i]) @ head.solvent_projection(v[j]) / 2.0
                    + head.bias
                )
        return entries

    torch.testing.assert_close(
        model.contact_loss(out, batch.supervision),
        pair_by_pair_contact_bce(batch, logits),
        rtol=1e-5,
        atol=1e-6,
    )
    assert model.eval()(batch.solute, batch.solvent).contact_logits is None
    _, bilinear = train_terms(fresh(seed=5, contact_head="bilinear"), batch)
    _, cosine = train_terms(fresh(seed=5), batch)
    assert bilinear["contact"] > 0 and bilinear["contact"] != cosine["contact"]
    for other in ("main", "contrastive", "aux", "kl"):
        assert bilinear[other] == cosine[other], other
    no_map = fresh(seed=5, contact_head="bilinear", interaction=False)
    _, terms = train_terms(no_map, batch)
    assert terms["contact"] > 0
    with pytest.raises(UserError, match="contact_head"):
        build_model("probpair", contact_head="dot")


def test_pairs_batched_ahead_collate_like_every_sample_graph_batched(cache):
    rng = np.random.default_rng(5)
    items = []
    for i, (u, v, y) in enumerate(PAIRS):
        gu, gv = cache.get(u), cache.get(v)
        # pairs with 1, 2, 0 (no samples), 3 ... complexes: owners must follow the counts
        n = i % 4
        sup = synthetic_supervision(gu, gv, rng, n_complexes=n, n_decoys=2 * n)
        items.append(PairItem(gu, gv, y, i, sup))
    for _ in range(2):  # the second collate reuses the per-pair batches
        got = collate_pairs(items).supervision
        for kind, owner in (("complexes", "complex_pair"), ("decoys", "decoy_pair")):
            graphs = [g for item in items for g in getattr(item.supervision, kind)]
            owners = [b for b, item in enumerate(items) for _ in getattr(item.supervision, kind)]
            want = dgl.batch(graphs)
            batched = getattr(got, kind)
            assert batched.batch_size == len(graphs)
            assert torch.equal(batched.batch_num_nodes(), want.batch_num_nodes())
            assert torch.equal(batched.batch_num_edges(), want.batch_num_edges())
            for a, b in zip(batched.edges(), want.edges(), strict=True):
                assert torch.equal(a, b)
            for key in want.ndata:
                assert torch.equal(batched.ndata[key], want.ndata[key])
            for key in want.edata:
                assert torch.equal(batched.edata[key], want.edata[key])
            assert getattr(got, owner).tolist() == owners


def test_info_nce_equals_a_loop_over_complexes(cache):
    batch = supervised_batch(cache)
    model = fresh()
    out = model.train()(batch.solute, batch.solvent)
    sup = batch.supervision
    pair = F.normalize(model.pair_projection(out.z), dim=1)
    pos = F.normalize(model.complex_projection(model.complex_encoder(sup.complexes)), dim=1)
    neg = F.normalize(model.complex_projection(model.complex_encoder(sup.decoys)), dim=1)
    losses = []
    for c, owner in enumerate(sup.complex_pair.tolist()):
        decoys = neg[sup.decoy_pair == owner]
        logits = torch.cat([pos[c : c + 1], decoys]) @ pair[owner] / model.tau
        losses.append(-torch.log_softmax(logits, dim=0)[0])
    torch.testing.assert_close(
        model.contrastive_loss(out, sup), torch.stack(losses).mean(), rtol=1e-5, atol=1e-6
    )


def test_segment_logsumexp_handles_empty_segments():
    values = torch.tensor([0.5, -1.0, 2.0, 30.0], requires_grad=True)
    segment = torch.tensor([0, 0, 2, 2])
    lse = _segment_logsumexp(values, segment, 4)
    torch.testing.assert_close(lse[0], torch.logsumexp(values[:2], 0))
    torch.testing.assert_close(lse[2], torch.logsumexp(values[2:], 0))
    assert float(lse[1]) < -80 and float(lse[3]) < -80
    lse[[0, 2]].sum().backward()
    assert torch.isfinite(values.grad).all()


def test_aux_loss_is_masked_mse(cache):
    batch = supervised_batch(cache)
    model = fresh()
    out = model.train()(batch.solute, batch.solvent)
    sup = batch.supervision
    pred = model.aux_head(out.z)
    mask = sup.aux_mask
    expected = F.mse_loss(pred[mask], sup.aux_targets[mask])
    torch.testing.assert_close(model.aux_targets_loss(out, sup), expected)
    assert (~mask).sum() == len(batch)  # one missing target per pair was left out


# ------------------------------------------------------------------------ inference, σ, order


def test_eval_is_deterministic_sample_free_and_sigma_positive(cache, monkeypatch):
    def no_3d(*args, **kwargs):
        raise AssertionError("the 3D encoder ran outside the contrastive loss")

    monkeypatch.setattr(ComplexEncoder, "forward", no_3d)
    batch = plain_batch(cache)
    model = fresh()
    model.eval()
    with torch.no_grad():
        a = model(batch.solute, batch.solvent)
        b = model(batch.solute, batch.solvent)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.variance, b.variance)
    assert float(a.aux_loss) == 0.0
    assert (a.variance > 0).all() and (a.variance >= model.variance_floor).all()
    # training without samples never needs the 3D encoder either
    loss, _ = train_terms(model, batch)
    loss.backward()
    # σ stays above the floor however negative the variance head's output
    with torch.no_grad():
        model.variance_out.bias.fill_(-1e4)
        low = model.eval()(batch.solute, batch.solvent).variance
    assert (low >= model.variance_floor).all() and (low > 0).all()


def test_training_output_carries_variance_and_attached_tensors(cache):
    batch = supervised_batch(cache)
    model = fresh().train()
    out = model(batch.solute, batch.solvent)
    assert out.variance is not None and out.variance.shape == (len(batch),)
    for name in ("interaction_map", "mu", "logvar", "z"):
        assert getattr(out, name).requires_grad, name
    assert not out.aux["interaction_map"].requires_grad  # aux: detached, for logging
    assert out.interaction_map.shape == batch.supervision.contact_maps.shape


def test_a_pair_predicted_in_a_batch_equals_the_pair_alone(cache):
    model = fresh().eval()
    batch = plain_batch(cache)
    with torch.no_grad():
        out = model(batch.solute, batch.solvent)
        for i, pair in enumerate(PAIRS):
            alone = plain_batch(cache, [pair])
            single = model(alone.solute, alone.solvent)
            torch.testing.assert_close(
                out.prediction[i], single.prediction[0], rtol=1e-5, atol=1e-5
            )
            torch.testing.assert_close(out.variance[i], single.variance[0], rtol=1e-5, atol=1e-6)


def test_complex_encoder_is_invariant_to_rigid_motion_and_atom_order():
    rng = np.random.default_rng(0)
    z = np.array([8, 1, 1, 6, 6, 8, 17])
    fragment = np.array([1, 1, 1, 0, 0, 0, 0])
    xyz = rng.normal(scale=1.5, size=(7, 3))
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    perm = rng.permutation(7)
    torch.manual_seed(0)
    encoder = ComplexEncoder(16, 2, 12, COMPLEX_GRAPH_CUTOFF_ANGSTROM)
    a = encoder(complex_graph(z, fragment, xyz))
    b = encoder(complex_graph(z[perm], fragment[perm], (xyz @ q.T + 3.0)[perm]))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    moved = xyz.copy()
    moved[:3] += 1.0  # the solvent moves: the embedding must see it
    assert not torch.allclose(a, encoder(complex_graph(z, fragment, moved)))


@pytest.mark.parametrize("rbf_size", [8, 16, 64])
def test_tabulated_rbf_is_close_to_the_exact_expansion(rbf_size):
    encoder = ComplexEncoder(8, 1, rbf_size, COMPLEX_GRAPH_CUTOFF_ANGSTROM)
    d = torch.rand(5000) * 6.0
    rbf, envelope = gaussian_rbf(d, rbf_size, COMPLEX_GRAPH_CUTOFF_ANGSTROM)
    index = encoder.grid_index(d)
    inside = d < COMPLEX_GRAPH_CUTOFF_ANGSTROM  # past the cutoff the envelope makes it 0 anyway
    assert (encoder.rbf_table[index] - rbf)[inside].abs().max() < 0.01
    assert (encoder.envelope_table[index] - envelope).abs().max() < 0.01
    assert float(envelope[d >= COMPLEX_GRAPH_CUTOFF_ANGSTROM].abs().max()) == 0.0


# ------------------------------------------------------------------- the composition shortcut


def test_the_complex_encoder_tells_apart_complexes_of_the_same_atoms(cache):
    """Decoys hold exactly their pair's atoms (checked on real decoys in test_sample_sets), so only
    geometry can tell them from the optimized complexes: the distance-aware encoder sees it."""
    gu, gv = cache.get("CC(=O)N"), cache.get("O")
    sup = synthetic_supervision(gu, gv, np.random.default_rng(0), n_complexes=6, n_decoys=6)
    torch.manual_seed(0)
    encoder = ComplexEncoder(16, 1, 16, COMPLEX_GRAPH_CUTOFF_ANGSTROM)
    with torch.no_grad():
        emb = encoder(dgl.batch(sup.complexes + sup.decoys))
    assert torch.unique(emb.round(decimals=5), dim=0).shape[0] == 12


# ------------------------------------------------------------------------- learning, reload


def _freesolv_pairs(n: int = 32) -> list[tuple[str, str, float]]:
    rows = [
        line.split("; ") for line in FREESOLV.read_text().splitlines() if not line.startswith("#")
    ]
    return [(r[1], "O", float(r[3])) for r in rows[:n]]


def test_overfits_32_real_freesolv_pairs_with_every_term_on(cache):
    batch = supervised_batch(cache, _freesolv_pairs(), n_complexes=2, n_decoys=2)
    y = (batch.y - batch.y.mean()) / batch.y.std()
    model = fresh(seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def eval_mse() -> float:
        model.eval()
        with torch.no_grad():
            return float(F.mse_loss(model(batch.solute, batch.solvent).prediction, y))

    start = eval_mse()
    best = start
    first_terms: dict[str, float] = {}
    for step in range(1, 301):
        model.train()
        opt.zero_grad()
        out = model(batch.solute, batch.solvent)
        loss, terms = model.training_loss(out, batch, y)
        first_terms = first_terms or terms
        loss.backward()
        opt.step()
        if step % 5 == 0:
            best = min(best, eval_mse())
            if best < start / 20:
                break
    assert all(first_terms[name] != 0.0 for name in TERMS), first_terms
    assert best < start / 20, f"eval MSE {start:.3f} -> {best:.3f} in {step} steps"
    assert terms["contrastive"] < first_terms["contrastive"]
    assert terms["aux"] < first_terms["aux"]
    assert terms["contact"] < first_terms["contact"]


@pytest.mark.parametrize("name", ["probpair", "probpair_2d"])
def test_reloaded_checkpoint_gives_the_same_mean_and_sigma(cache, tmp_path, name):
    batch = supervised_batch(cache) if name == "probpair" else plain_batch(cache)
    model = fresh(name, seed=3)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(2):
        opt.zero_grad()
        loss, _ = train_terms(model, batch)
        loss.backward()
        opt.step()
    path = save_weights(model.state_dict(), tmp_path / "model.pt")
    torch.manual_seed(99)
    restored = load_weights(build_model(name, **model.hparams), path)
    model.eval()
    restored.eval()
    with torch.no_grad():
        a = model(batch.solute, batch.solvent)
        b = restored(batch.solute, batch.solvent)
    assert torch.equal(a.prediction, b.prediction) and torch.equal(a.variance, b.variance)


# ------------------------------------------------------------------- ΔG_solv(ALPB) as an input


def input_batch(cache: GraphCache, values: list[float]):
    return collate_pairs(
        [
            PairItem(cache.get(u), cache.get(v), y, i, inputs=np.array([x], dtype=np.float32))
            for i, ((u, v, y), x) in enumerate(zip(PAIRS, values, strict=True))
        ]
    )


def test_alpb_input_starts_as_the_model_without_it_and_leaves_the_other_weights(cache):
    plain, with_input = fresh(), fresh(alpb_input=True)
    assert ProbPair.input_names(with_input.hparams) == (AUX_TARGETS[0],)
    assert ProbPair.input_names(plain.hparams) == () and plain.input_proj is None
    own = {name for name in with_input.state_dict() if name.startswith("input_proj.")}
    assert own == {"input_proj.weight", "input_proj.bias"}
    plain_state = plain.state_dict()
    for name, value in with_input.state_dict().items():
        if name not in own:
            assert torch.equal(value, plain_state[name]), name
    batch = input_batch(cache, [-5.0, float("nan"), -60.0, -8.0, 1.0])
    plain.eval()
    with_input.eval()
    with torch.no_grad():
        a = plain(batch.solute, batch.solvent)
        b = with_input.forward_batch(batch)
    torch.testing.assert_close(a.prediction, b.prediction)  # zero-initialized input weights
    torch.testing.assert_close(a.variance, b.variance)


def test_alpb_input_changes_the_prediction_and_a_missing_value_is_flagged(cache):
    model = fresh(alpb_input=True)
    with torch.no_grad():
        torch.nn.init.normal_(model.input_proj.weight)
    model.eval()
    values = [-5.0, -6.0, -60.0, -8.0, 1.0]
    with torch.no_grad():
        base = model.forward_batch(input_batch(cache, values)).prediction
        shifted = model.forward_batch(input_batch(cache, [-15.0, *values[1:]])).prediction
        missing = model.forward_batch(input_batch(cache, [float("nan"), *values[1:]])).prediction
        zero = model.forward_batch(input_batch(cache, [0.0, *values[1:]])).prediction
    assert torch.isfinite(missing).all()
    assert shifted[0] != base[0] and torch.equal(shifted[1:], base[1:])  # per pair
    assert missing[0] != zero[0]  # NaN is "no value" (its flag), not 0 kcal/mol
    features = model._input_features(torch.tensor([[-5.0], [float("nan")]]), 2)
    torch.testing.assert_close(features, torch.tensor([[-0.5, 0.0], [0.0, 1.0]]))


def test_alpb_input_is_required_and_refused_where_it_does_not_belong(cache):
    batch = plain_batch(cache)
    with pytest.raises(ValueError, match="alpb_input: true"):
        fresh(alpb_input=True).eval()(batch.solute, batch.solvent)
    with pytest.raises(ValueError, match=r"expected \(5, 1\)"):
        fresh(alpb_input=True).eval()(batch.solute, batch.solvent, torch.zeros(5, 2))
    with pytest.raises(ValueError, match="reads no per-pair inputs"):
        fresh().eval()(batch.solute, batch.solvent, torch.zeros(5, 1))
    mixed = [
        PairItem(cache.get("CCO"), cache.get("O"), 1.0, 0, inputs=np.array([1.0], np.float32)),
        PairItem(cache.get("CCO"), cache.get("O"), 1.0, 1),
    ]
    with pytest.raises(ValueError, match="some pairs of the batch have inputs"):
        collate_pairs(mixed)


def test_alpb_input_trains_its_own_weights(cache):
    model = fresh(alpb_input=True).train()
    batch = input_batch(cache, [-5.0, float("nan"), -60.0, -8.0, 1.0])
    torch.manual_seed(11)
    out = model.forward_batch(batch)
    y = (batch.y - batch.y.mean()) / batch.y.std()
    loss, _ = model.training_loss(out, batch, y)
    loss.backward()
    assert model.input_proj.weight.grad is not None
    assert model.input_proj.weight.grad.abs().sum() > 0


def test_alpb_input_leaves_the_auxiliary_targets_and_the_global_generator(cache):
    """An input is not also a target (a copy task), and building the input weights draws nothing
    from the global generator (the training that follows draws what it would without them)."""
    batch = supervised_batch(cache, parts=("aux",))
    plain = fresh(contrastive_weight=0.0, contact_weight=0.0)
    torch.manual_seed(5)
    fresh(alpb_input=False)
    after_plain = torch.rand(4)
    torch.manual_seed(5)
    fresh(alpb_input=True)
    assert torch.equal(torch.rand(4), after_plain)
    plain.eval()
    with torch.no_grad():
        out = plain(batch.solute, batch.solvent)
        full = plain.aux_targets_loss(out, batch.supervision)
        plain.hparams = {**plain.hparams, "alpb_input": True}  # reads ALPB: that column leaves
        without_alpb = plain.aux_targets_loss(out, batch.supervision)
    mask = batch.supervision.aux_mask.clone()
    error = (plain.aux_head(out.z) - batch.supervision.aux_targets) ** 2
    mask[:, 0] = False
    torch.testing.assert_close(without_alpb, (error * mask).sum() / mask.sum())
    assert not torch.isclose(full, without_alpb)
