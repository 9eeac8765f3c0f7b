"""Training and inference throughput (pairs/s) per model on real FreeSolv / MNSol pairs.

Prints a Markdown table: per model, device and batch size, training pairs/s (forward + backward +
Adam step, collate included) and inference pairs/s, both with collate (what `evaluate` sees) and
model-only (batches collated beforehand), and the parameter count. Target: inference >= 5,000
pairs/s on 2 CPU cores for CIGIN-sized models.

example:
  .venv/bin/python bench/train_throughput.py --threads 2 --pairs 1024
  .venv/bin/python bench/train_throughput.py --models cigin --batch-sizes 32 256 --threads 1 \\
      --profile
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path

import pandas as pd

from pairfactory.ml.models import MODEL_NAMES

REPO = Path(__file__).resolve().parents[1]


def real_pairs(n: int, mnsol_csv: Path) -> pd.DataFrame:
    """Half FreeSolv (bundled, solvent water), half MNSol (if its CSV exists): a real size
    distribution."""
    rows = []
    for line in (REPO / "data" / "freesolv" / "database.txt").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        fields = [f.strip() for f in line.split(";")]
        rows.append((fields[1], "O", float(fields[3])))
    frame = pd.DataFrame(rows, columns=["solute_smiles", "solvent_smiles", "value"])
    if mnsol_csv.is_file():
        mnsol = pd.read_csv(mnsol_csv, sep=";")
        mnsol = mnsol.rename(
            columns={
                "SoluteSMILES": "solute_smiles",
                "SolventSMILES": "solvent_smiles",
                "DeltaGsolv": "value",
            }
        )
        n_freesolv = min(n // 2, len(frame))
        frame = pd.concat(
            [
                frame.head(n_freesolv),
                mnsol[["solute_smiles", "solvent_smiles", "value"]].head(n - n_freesolv),
            ]
        )
    else:
        print(f"note: {mnsol_csv} not found, FreeSolv pairs only", file=sys.stderr)
    frame = frame.head(n).reset_index(drop=True)
    frame["pair_id"] = [
        hashlib.sha1(f"{a}|{b}|{i}".encode()).hexdigest()[:16]
        for i, (a, b) in enumerate(zip(frame.solute_smiles, frame.solvent_smiles))
    ]
    return frame


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def measure(
    model_name: str, dataset, device: str, batch_size: int, repeats: int
) -> dict[str, float]:
    import torch
    from torch.utils.data import DataLoader

    from pairfactory.ml.datasets import collate_pairs
    from pairfactory.ml.models import build_model
    from pairfactory.ml.train import seed_everything

    seed_everything(0)
    model = build_model(model_name).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate_pairs,
        generator=torch.Generator().manual_seed(0),
    )

    def train_epoch() -> int:
        model.train()
        n = 0
        for batch in loader:
            batch = batch.to(device)
            optimizer.zero_grad()
            out = model.forward_batch(batch)
            loss = torch.nn.functional.mse_loss(out.prediction.reshape(-1), batch.y) + out.aux_loss
            loss.backward()
            optimizer.step()
            n += len(batch)
        return n

    def infer(batches) -> int:
        model.eval()
        n = 0
        with torch.no_grad():
            for batch in batches:
                batch = batch.to(device)
                model.forward_batch(batch).prediction.sum().item()
                n += len(batch)
        return n

    train_epoch()  # warm-up (allocations, lazy init)
    _sync(device)
    t = time.perf_counter()
    n = sum(train_epoch() for _ in range(repeats))
    _sync(device)
    train_rate = n / (time.perf_counter() - t)

    eval_loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_pairs
    )
    infer(eval_loader)
    t = time.perf_counter()
    n = sum(infer(eval_loader) for _ in range(repeats))
    _sync(device)
    infer_rate = n / (time.perf_counter() - t)

    pre = [b.to(device) for b in eval_loader]
    t = time.perf_counter()
    n = sum(infer(pre) for _ in range(repeats))
    _sync(device)
    model_only = n / (time.perf_counter() - t)

    t = time.perf_counter()
    n = sum(len(b) for _ in range(repeats) for b in eval_loader)
    collate_rate = n / (time.perf_counter() - t)
    return {
        "params": n_params,
        "train": train_rate,
        "infer": infer_rate,
        "infer_model_only": model_only,
        "collate": collate_rate,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument("--pairs", type=int, default=1024, help="real pairs to time on")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 256])
    parser.add_argument(
        "--threads", type=int, default=2, help="torch CPU threads (the target is for 2)"
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed passes over the pairs (after one warm-up)"
    )
    parser.add_argument(
        "--mnsol", type=Path, default=REPO.parent / "shared" / "data" / "mnsol" / "mnsol.csv"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="also print a torch profiler table per model (CPU, inference)",
    )
    args = parser.parse_args(argv)

    import torch

    from pairfactory.ml.datasets import PairGraphDataset
    from pairfactory.ml.graph_cache import GraphCache
    from pairfactory.ml.train import resolve_device

    torch.set_num_threads(args.threads)
    table = real_pairs(args.pairs, args.mnsol)
    dataset = PairGraphDataset(table, GraphCache(None))
    devices = ["cpu"] + (["cuda"] if resolve_device("auto") == "cuda" else [])
    atoms = [item.solute.num_nodes() + item.solvent.num_nodes() for item in dataset.items]
    print(
        f"{len(dataset)} real pairs ({len(dataset.rejected)} rejected), heavy atoms per pair: "
        f"mean {sum(atoms) / len(atoms):.1f}, max {max(atoms)}; torch threads {args.threads}; "
        f"devices {devices}\n"
    )
    print(
        "| model | params | device | threads | batch | train pairs/s | inference pairs/s "
        "| inference, model only | collate only |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model_name in args.models:
        for device in devices:
            for bs in args.batch_sizes:
                r = measure(model_name, dataset, device, bs, args.repeats)
                print(
                    f"| {model_name} | {r['params']:,} | {device} | {args.threads} | {bs} "
                    f"| {r['train']:,.0f} | {r['infer']:,.0f} | {r['infer_model_only']:,.0f} "
                    f"| {r['collate']:,.0f} |",
                    flush=True,
                )
    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        from torch.utils.data import DataLoader

        from pairfactory.ml.datasets import collate_pairs
        from pairfactory.ml.models import build_model

        for model_name in args.models:
            model = build_model(model_name).eval()
            batches = list(
                DataLoader(dataset, batch_size=max(args.batch_sizes), collate_fn=collate_pairs)
            )
            with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
                for b in batches:
                    model.forward_batch(b)
            print(f"\n### {model_name}: inference profile (batch {max(args.batch_sizes)})\n")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    return 0


if __name__ == "__main__":
    sys.exit(main())
