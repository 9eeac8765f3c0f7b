"""End-to-end prediction throughput and peak memory: `pairfactory predict --input CSV` on a real
screening-shaped file (every FreeSolv solute, and MNSol's when its CSV is there, against a list of
common solvents, repeated up to --rows rows).

Each size runs `pairfactory predict` as its own process; the table reports the wall time of the
whole command (start-up, model loading, featurization, inference, writing), the predictor's own
pairs/s, and the process's peak resident memory (getrusage of the child). Target (issues 10 and 11):
>= 5,000 pairs/s on 2 cores end to end, memory bounded for 1 M rows.

Without --model-dir a model is trained first (probpair_2d, 1 epoch, default sizes: throughput
does not depend on how well it fits) into results/bench/predict/model.

example:
  .venv/bin/python bench/predict_throughput.py --rows 10000 100000 1000000 --threads 2
  .venv/bin/python bench/predict_throughput.py \\
      --model-dir results/models/freesolv/dg_hydration_kcal_mol/probpair --rows 100000
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SOLVENTS = (
    "O",
    "CO",
    "CCO",
    "CCCO",
    "CC(C)O",
    "CCCCO",
    "CC(C)=O",
    "CC#N",
    "ClCCl",
    "ClC(Cl)Cl",
    "c1ccccc1",
    "Cc1ccccc1",
    "CCCCCC",
    "CCCCCCCC",
    "C1CCCCC1",
    "CCOCC",
    "C1CCOC1",
    "CS(C)=O",
    "CN(C)C=O",
    "CCOC(C)=O",
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--chunk-rows", type=int, default=50_000)
    parser.add_argument("--out-dir", type=Path, default=Path("results/bench/predict"))
    parser.add_argument(
        "--mnsol-csv",
        type=Path,
        default=REPO.parent / "shared" / "data" / "mnsol" / "mnsol.csv",
        help="add MNSol's solutes when this file exists (read only, never copied)",
    )
    return parser.parse_args(argv)


def solutes(mnsol_csv: Path) -> list[str]:
    found = []
    for line in (REPO / "data" / "freesolv" / "database.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        found.append(line.split(";")[1].strip())
    if mnsol_csv.is_file():
        found += pd.read_csv(mnsol_csv, sep=";")["SoluteSMILES"].dropna().astype(str).tolist()
    return sorted(set(found))


def write_input(path: Path, n_rows: int, solute_list: list[str]) -> tuple[int, int]:
    """Solute x solvent pairs, cycled to ``n_rows``; returns the unique solutes and solvents."""
    pairs = [(u, v) for u in solute_list for v in SOLVENTS]
    frame = pd.DataFrame(
        [pairs[i % len(pairs)] for i in range(n_rows)], columns=["solute", "solvent"]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return frame["solute"].nunique(), frame["solvent"].nunique()


def ensure_model(out_dir: Path) -> Path:
    model_dir = out_dir / "model"
    if (model_dir / "model.json").is_file():
        return model_dir
    from pairfactory.pairs import curate, write_curated

    pairs_dir = out_dir / "pairs"
    write_curated(curate("freesolv"), pairs_dir)
    subprocess.run(
        [
            str(Path(sys.executable).parent / "pairfactory"),
            "train",
            "--pairs",
            str(pairs_dir / "freesolv" / "dg_hydration_kcal_mol.parquet"),
            "--model",
            "probpair_2d",
            "--epochs",
            "1",
            "--out-dir",
            str(model_dir),
            "--graph-cache",
            str(out_dir / "graphs.pt"),
            "--no-progress",
        ],
        check=True,
    )
    return model_dir


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    model_dir = args.model_dir or ensure_model(args.out_dir)
    card = json.loads((model_dir / "model.json").read_text())
    solute_list = solutes(args.mnsol_csv)
    rows = []
    for n_rows in args.rows:
        source = args.out_dir / f"pairs-{n_rows}.csv"
        n_solutes, n_solvents = write_input(source, n_rows, solute_list)
        out = args.out_dir / f"predictions-{n_rows}.parquet"
        command = [
            str(Path(sys.executable).parent / "pairfactory"),
            "predict",
            "--model-dir",
            str(model_dir),
            "--input",
            str(source),
            "--solute-column",
            "solute",
            "--solvent-column",
            "solvent",
            "--out",
            str(out),
            "--threads",
            str(args.threads),
            "--chunk-rows",
            str(args.chunk_rows),
            "--no-progress",
        ]
        started = time.perf_counter()
        with open(args.out_dir / f"predict-{n_rows}.out", "w+") as stdout:
            process = subprocess.Popen(command, stdout=stdout, stderr=subprocess.DEVNULL)
            # wait4: this child's own resource usage (its peak resident memory)
            _, status, usage = os.wait4(process.pid, 0)
            wall = time.perf_counter() - started
            if os.waitstatus_to_exitcode(status) != 0:
                raise SystemExit(f"{' '.join(command)} failed ({status})")
            stdout.seek(0)
            counts = json.loads(stdout.read().strip().splitlines()[-1])
        rows.append(
            {
                "rows": n_rows,
                "unique solutes": n_solutes,
                "unique solvents": n_solvents,
                "ok": counts["ok"],
                "rejected": counts["rejected"],
                "wall s (command)": round(wall, 1),
                "pairs/s (command)": round(n_rows / wall),
                "pairs/s (predict)": round(counts["pairs_per_s"]),
                "peak RSS MB": round(usage.ru_maxrss / 1024),  # Linux: kB
            }
        )
        out.unlink()
    print(
        f"model {card['model']} ({len(card['members'])} member(s), hparams "
        f"{ {k: v for k, v in card['hparams'].items() if k in ('hidden_dim', 'latent_dim')} }), "
        f"{args.threads} torch threads, chunks of {args.chunk_rows} rows, "
        f"{os.cpu_count()} CPUs on the machine\n"
    )
    table = pd.DataFrame(rows)
    for column in table.columns:  # thousands separators; tabulate would print 1e+06
        if column != "wall s (command)":
            table[column] = table[column].map(lambda v: f"{v:,}")
    print(table.to_markdown(index=False, colalign=["right"] * len(table.columns)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
