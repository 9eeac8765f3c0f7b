"""Export one system's optimized samples from its shards as extended XYZ frames.

Per frame: species, positions (Å) and a per-atom `fragment` array (0 = solute); the info line
holds the energy (eV, ASE's convention, also as energy_hartree), the interaction energy, status,
k and the identities. Samples without an optimized geometry are skipped.
"""

from __future__ import annotations

import argparse
from pathlib import Path

PARENTS = ("log",)

EPILOG = """example:
  pairfactory export-xyz --shards-dir results/shards/freesolv/xtb-1a2b3c4d \\
      --system-id 0f3c9a1b2d4e5f60 --out pair.xyz --ok-only
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EPILOG
    parser.add_argument(
        "--shards-dir",
        type=Path,
        required=True,
        metavar="DIR",
        help="folder of one dataset/engine's shards",
    )
    parser.add_argument(
        "--system-id",
        required=True,
        metavar="ID",
        help="16-hex system id (column system_id of the shards)",
    )
    parser.add_argument(
        "--out", type=Path, required=True, metavar="PATH", help="extended XYZ file to write"
    )
    parser.add_argument("--ok-only", action="store_true", help="only samples whose status is ok")


def run(args: argparse.Namespace) -> int:
    from pairfactory.qm.shards import export_xyz

    n = export_xyz(args.shards_dir, args.system_id, args.out, ok_only=args.ok_only)
    print(f"wrote {n} frames of system {args.system_id} to {args.out}")
    return 0
