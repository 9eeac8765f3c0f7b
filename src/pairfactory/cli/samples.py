"""Generate seeded random solute–solvent complexes and write them as extended XYZ.

Sample k of a pair is a function of (seed, key, k) only: the same arguments give bit-identical
coordinates. Each frame carries a per-atom `fragment` array (0 = solute, 1..n = solvent copies)
and the arrangement (rotations, translations, contact distances, seed) in its info line. The
complex-building settings are the config's `samples` section (schema defaults without --config).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from pairfactory.errors import UserError

log = logging.getLogger(__name__)

PARENTS = ("config", "log", "progress")

EPILOG = """examples:
  pairfactory samples --solute "c1ccccc1O" --solvent "O" --samples 4 --out phenol_water.xyz
  pairfactory samples --solute "CO" --solvent "O" --n-solvent 4 --config config.yaml --out m.xyz
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument("--solute", required=True, metavar="SMILES", help="solute SMILES")
    parser.add_argument("--solvent", required=True, metavar="SMILES", help="solvent SMILES")
    parser.add_argument(
        "--key", default=None, help="system key the seeds derive from (default: the two SMILES)"
    )
    parser.add_argument(
        "--samples",
        type=int,
        default=4,
        metavar="N",
        help="number of samples k = 0..N-1 (default: %(default)s)",
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="global seed (default: the config's `seed`)"
    )
    parser.add_argument(
        "--n-solvent",
        type=int,
        default=None,
        metavar="N",
        help="solvent copies (default: the config's samples.n_solvent)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="multi-frame extended XYZ file"
    )


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from ase.io import write
    from tqdm import tqdm

    from pairfactory.cli import load_config_arg
    from pairfactory.qm.samples import EmbeddingError, PlacementError, sample_complex, to_atoms
    from pairfactory.qm.settings import QmSettings

    if args.samples < 1:
        raise UserError(f"--samples must be >= 1, got {args.samples}")
    settings = QmSettings.from_config(load_config_arg(args))
    seed = settings.global_seed if args.seed is None else args.seed
    sampling = settings.sampling
    if args.n_solvent is not None:
        sampling = dataclasses.replace(sampling, n_solvent=args.n_solvent)
    key = args.key or f"{args.solute}\t{args.solvent}"
    frames = []
    bar = tqdm(range(args.samples), desc="samples", unit="complex", disable=args.no_progress)
    for k in bar:
        try:
            cx = sample_complex(args.solute, args.solvent, key, k, seed, sampling)
        except EmbeddingError as err:
            raise UserError(f"{err}; check the SMILES") from err
        except PlacementError as err:
            raise UserError(str(err)) from err
        frames.append(to_atoms(cx))
        log.info("sample %d: %d atoms, %d redraws", k, cx.n_atoms, cx.arrangement["n_redraws"])
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write(args.out, frames, format="extxyz")
    print(f"wrote {len(frames)} complexes to {args.out}")
    return 0
