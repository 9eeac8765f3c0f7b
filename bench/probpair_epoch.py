"""Training epoch time of ProbPair (every part on, with synthetic sample supervision of realistic
size) against CIGIN and the 2D twin, on the 642 FreeSolv pairs.

Supervision per pair, built once before timing: ``--samples`` optimized complexes and ``--decoys``
decoys, each the solute with its hydrogens (one RDKit ETKDG conformer) plus one water molecule
(``--heavy-atoms``: no hydrogens at all, as ``sample_sets`` builds the graphs by default) placed
rigidly at a random orientation, in contact with a random solute atom (complexes) or
anywhere within 3-6 Å of the solute's surface (decoys); edges for every atom pair closer than
``COMPLEX_GRAPH_CUTOFF_ANGSTROM``. Also a random contact map (about 20 % non-zero) and the
auxiliary targets. The geometry is only as realistic as the graph sizes need to be (atoms and
edges per complex, which set the cost); what the model learns from it is meaningless.

An epoch is what ``train._train_one_epoch`` does: batches from a shuffled DataLoader with
``collate_pairs`` (the sample graphs are batched there, so collate time counts; each pair's
graphs are batched once, on first use, as in training), forward,
``training_loss``, backward, Adam step. Prints a Markdown table: seconds per epoch (median of
``--repeats`` rounds over all models, after one warm-up epoch each) and the ratio to CIGIN.

example:
  .venv/bin/python bench/probpair_epoch.py --threads 1 --batch-size 32 --repeats 5
  .venv/bin/python bench/probpair_epoch.py --heavy-atoms --decoys 16 --models cigin probpair
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
WATER = (
    np.array([8, 1, 1]),
    np.array([[0.0, 0.0, 0.0], [0.9572, 0.0, 0.0], [-0.2400, 0.9266, 0.0]]),
)


def freesolv_pairs() -> list[tuple[str, str, float]]:
    rows = []
    for line in (REPO / "data" / "freesolv" / "database.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append((fields[1], "O", float(fields[3])))
    return rows


def solute_geometry(smiles: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(atomic numbers, positions in Å) of one ETKDG conformer with hydrogens; random positions
    of the right atoms when embedding fails."""
    from rdkit import Chem
    from rdkit.Chem import AllChem

    mol = Chem.AddHs(Chem.MolFromSmiles(smiles))
    z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()])
    params = AllChem.ETKDGv3()
    params.randomSeed = 0
    if AllChem.EmbedMolecule(mol, params) == 0:
        return z, mol.GetConformer().GetPositions()
    return z, rng.uniform(0.0, 1.2 * len(z) ** (1 / 3) + 1.0, size=(len(z), 3))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    return q * np.sign(np.diag(r))


def place_water(solute_xyz: np.ndarray, rng: np.random.Generator, contact: bool) -> np.ndarray:
    """Water positions: oxygen 2.6-3.2 Å from a random solute atom (contact), or 3-6 Å from the
    solute's surface in a random direction (decoy)."""
    water = WATER[1] @ _rotation(rng).T
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    if contact:
        anchor = solute_xyz[rng.integers(len(solute_xyz))]
        oxygen = anchor + direction * rng.uniform(2.6, 3.2)
    else:
        centre = solute_xyz.mean(axis=0)
        radius = np.max(np.linalg.norm(solute_xyz - centre, axis=1))
        oxygen = centre + direction * (radius + rng.uniform(3.0, 6.0))
    return water + oxygen


def complex_graph(z: np.ndarray, fragment: np.ndarray, xyz: np.ndarray, cutoff: float):
    import dgl
    import torch

    d = np.linalg.norm(xyz[:, None] - xyz[None], axis=-1)
    np.fill_diagonal(d, np.inf)
    src, dst = np.nonzero(d < cutoff)
    graph = dgl.graph((torch.from_numpy(src), torch.from_numpy(dst)), num_nodes=len(z))
    graph.ndata["z"] = torch.from_numpy(z.astype(np.int64))
    graph.ndata["fragment"] = torch.from_numpy(fragment.astype(np.int64))
    graph.edata["distance_angstrom"] = torch.from_numpy(d[src, dst].astype(np.float32))[:, None]
    return graph


def synthetic_supervision(
    dataset, n_samples: int, n_decoys: int, seed: int, hydrogens: bool = True
):
    """pair index -> PairSupervision of realistic size (see the module docstring); without
    ``hydrogens`` the 3D graphs hold heavy atoms only (sample_sets' default)."""
    from pairfactory.ml.datasets import AUX_TARGETS, COMPLEX_GRAPH_CUTOFF_ANGSTROM, PairSupervision

    rng = np.random.default_rng(seed)
    out = {}
    for item in dataset.items:
        smiles = dataset.pairs_df["solute_smiles"].iloc[item.index]
        z_u, xyz_u = solute_geometry(smiles, rng)
        z = np.concatenate([z_u, WATER[0]])
        fragment = np.concatenate([np.zeros(len(z_u)), np.ones(3)])

        keep = np.ones(len(z), dtype=bool) if hydrogens else z != 1

        def graph(contact: bool, z=z, fragment=fragment, xyz_u=xyz_u, keep=keep):
            xyz = np.concatenate([xyz_u, place_water(xyz_u, rng, contact)])
            return complex_graph(z[keep], fragment[keep], xyz[keep], COMPLEX_GRAPH_CUTOFF_ANGSTROM)

        n_u, n_v = item.solute.num_nodes(), item.solvent.num_nodes()
        contacts = rng.uniform(size=(n_u, n_v)) * (rng.uniform(size=(n_u, n_v)) < 0.2)
        out[item.index] = PairSupervision(
            aux_targets=rng.normal(size=len(AUX_TARGETS)).astype(np.float32),
            contact_map=contacts.astype(np.float32),
            complexes=[graph(True) for _ in range(n_samples)],
            decoys=[graph(False) for _ in range(n_decoys)],
        )
    return out


def epoch_runner(model_name: str, items, batch_size: int, hparams: dict | None = None):
    """(a function running one training epoch and returning its seconds, the parameter count)."""
    import torch
    from torch.utils.data import DataLoader

    from pairfactory.ml.datasets import collate_pairs
    from pairfactory.ml.models import build_model
    from pairfactory.ml.train import seed_everything

    seed_everything(0)
    model = build_model(model_name, **(hparams or {}))
    names = model.input_names(model.hparams)
    if names:  # alpb_input: synthetic ΔG_solv values in kcal/mol, a tenth missing (as on FreeSolv)
        rng = np.random.default_rng(0)
        values = rng.normal(-5.0, 3.0, size=(len(items), len(names))).astype(np.float32)
        values[rng.random(len(items)) < 0.1] = np.nan
        items = [dataclasses.replace(item, inputs=v) for item, v in zip(items, values)]
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(
        items,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_pairs,
        generator=torch.Generator().manual_seed(0),
    )
    scale = float(np.std([item.y for item in items]))

    def epoch() -> float:
        model.train()
        start = time.perf_counter()
        for batch in loader:
            optimizer.zero_grad()
            out = model.forward_batch(batch)
            loss, _ = model.training_loss(out, batch, batch.y / scale)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    epoch()  # warm-up
    return epoch, sum(p.numel() for p in model.parameters())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=["cigin", "probpair_2d", "probpair"])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--samples", type=int, default=8, help="optimized complexes per pair")
    parser.add_argument("--decoys", type=int, default=8, help="decoys per pair")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs after a warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--heavy-atoms",
        action="store_true",
        help="3D graphs without hydrogens (sample_sets' default, complex_hydrogens: false)",
    )
    parser.add_argument(
        "--probpair-hparams",
        type=json.loads,
        action="append",
        default=[],
        help="extra probpair rows, e.g. '{\"complex_layers\": 2}' (repeatable)",
    )
    args = parser.parse_args(argv)

    import pandas as pd
    import torch

    from pairfactory.ml.datasets import PairGraphDataset, PairItem
    from pairfactory.ml.graph_cache import GraphCache

    torch.set_num_threads(args.threads)
    table = pd.DataFrame(freesolv_pairs(), columns=["solute_smiles", "solvent_smiles", "value"])
    dataset = PairGraphDataset(table, GraphCache(None))
    started = time.perf_counter()
    supervision = synthetic_supervision(
        dataset, args.samples, args.decoys, args.seed, hydrogens=not args.heavy_atoms
    )
    built = time.perf_counter() - started
    plain = list(dataset.items)
    supervised = [
        PairItem(i.solute, i.solvent, i.y, i.index, supervision[i.index]) for i in dataset.items
    ]
    graphs = [g for s in supervision.values() for g in s.complexes + s.decoys]
    atoms = np.array([g.num_nodes() for g in graphs])
    edges = np.array([g.num_edges() for g in graphs])
    print(
        f"{len(plain)} FreeSolv pairs; {args.samples} complexes + {args.decoys} decoys per pair "
        f"(built in {built:.0f} s): atoms per complex mean {atoms.mean():.1f} "
        f"(min {atoms.min()}, max {atoms.max()}), directed edges per complex mean "
        f"{edges.mean():.0f} (max {edges.max()}); batch {args.batch_size}, torch threads "
        f"{args.threads}, median of {args.repeats} epochs\n"
    )
    print("| model | hyper-parameters | sample graphs | params | s / epoch | x CIGIN |")
    print("|---|---|---|---|---|---|")
    # (model, hyper-parameters, what the sample graphs are: none or per sample)
    runs = [(name, {}, "per sample" if name == "probpair" else "none") for name in args.models]
    runs += [("probpair", h, "per sample") for h in args.probpair_hparams]
    runners = []
    for name, hparams, graphs_kind in runs:
        items = {"none": plain, "per sample": supervised}
        runners.append(epoch_runner(name, items[graphs_kind], args.batch_size, hparams))
    # Rounds over all models, so that load from other processes on the machine hits them alike.
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(args.repeats):
        for i, (epoch, _) in enumerate(runners):
            times[i].append(epoch())
    medians = [statistics.median(t) for t in times]
    reference = next((m for run, m in zip(runs, medians) if run[0] == "cigin"), None)
    for (name, hparams, graphs_kind), (_, n_params), seconds in zip(runs, runners, medians):
        ratio = f"{seconds / reference:.2f}" if reference else "-"
        label = ", ".join(f"{k}={v}" for k, v in hparams.items()) or "defaults"
        print(f"| {name} | {label} | {graphs_kind} | {n_params:,} | {seconds:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
