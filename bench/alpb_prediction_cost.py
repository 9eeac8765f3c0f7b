"""What ALPB ΔG_solv costs at prediction (a model trained with alpb_input: true): the seconds
`pairfactory predict` spends per pair computing the input, cold (new molecules: the solute
optimized by the QM engine, then one xtb single point) and warm (both cached), on real FreeSolv
solutes against a few solvents (one of them without ALPB parameters: no xtb run).

It runs `qm.descriptors.PairSolvation`, the code path of `predict` and of the descriptor table, in
fresh cache folders under --work (deleted first). Needs the xtb program.

With --against TABLE (a descriptor table of `pairfactory solvation`) and --parts-cache (the
isolated molecules it was made from, copied, never written to), it instead recomputes every row of
the table the way prediction would, in a fresh solvation cache, and reports how many values,
statuses and geometries agree: the check that a model trained on the table gets the same inputs
at prediction.

examples:
  .venv/bin/python bench/alpb_prediction_cost.py --solutes 20 --solvents O CO c1ccccc1 CCCCCCCCCCCC
  .venv/bin/python bench/alpb_prediction_cost.py \\
      --against results/descriptors/freesolv/xtb-5bc9618c/alpb.parquet \\
      --parts-cache ../shared/qm/parts
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "models"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--solutes", type=int, default=20, help="first N curated FreeSolv solutes")
    parser.add_argument("--solvents", nargs="+", default=["O", "CO", "c1ccccc1", "CCCCCCCCCCCC"])
    parser.add_argument("--threads", type=int, default=1, help="QM engine threads")
    parser.add_argument("--workers", type=int, default=1, help="processes (predict --qm-jobs)")
    parser.add_argument("--work", type=Path, default=REPO / "results" / "bench" / "alpb_cost")
    parser.add_argument("--against", type=Path, help="a descriptor table to recompute")
    parser.add_argument("--parts-cache", type=Path, help="with --against: its parts cache")
    args = parser.parse_args(argv)
    if args.against is not None:
        if args.parts_cache is None:
            parser.error("--against needs --parts-cache")
        return recompute(args.against, args.parts_cache, args.work, args.threads)

    from curated_tables import freesolv_rows

    from pairfactory.qm.descriptors import PairSolvation
    from pairfactory.qm.settings import QmSettings
    from pairfactory.qm.solvation import alpb_solvent_name, xtb_version

    shutil.rmtree(args.work, ignore_errors=True)
    solutes = list(dict.fromkeys(freesolv_rows(10 * args.solutes)["solute_smiles"]))
    solutes = solutes[: args.solutes]
    pairs = [(a, b) for b in args.solvents for a in solutes]
    settings = QmSettings.from_config({})

    def run() -> tuple[float, PairSolvation, object]:
        solvation = PairSolvation(
            settings,
            args.work / "parts",
            args.work / "solvation",
            threads=args.threads,
            require_program=True,
            workers=args.workers,
        )
        started = time.perf_counter()
        table = solvation.table([a for a, _ in pairs], [b for _, b in pairs])
        return time.perf_counter() - started, solvation, table

    cold_s, cold, table = run()
    warm_s, _, again = run()  # new objects: only the disk caches are shared
    assert table.equals(again), "a warm run gave other values"
    xtb_runs = cold.solvation.computed
    print(
        f"{len(solutes)} FreeSolv solutes x {len(args.solvents)} solvents = {len(pairs)} pairs; "
        f"engine {settings.engine_tag}, xtb {xtb_version()}, {args.threads} QM thread(s), "
        f"{args.workers} process(es)\n"
    )
    print("| run | pairs | solutes optimized | xtb runs | s | s / pair | s / new solute |")
    print("|---|---|---|---|---|---|---|")
    print(
        f"| cold | {len(pairs)} | {cold.parts.computed} | {xtb_runs} | {cold_s:.1f} | "
        f"{cold_s / len(pairs):.3f} | {cold_s / max(cold.parts.computed, 1):.2f} |"
    )
    print(
        f"| warm (cached) | {len(pairs)} | 0 | 0 | {warm_s:.2f} | {warm_s / len(pairs):.4f} | – |"
    )
    counts = table["status"].value_counts().to_dict()
    unparametrized = [s for s in args.solvents if alpb_solvent_name(s) is None]
    print(f"\nstatus: {counts}; solvents without ALPB parameters: {unparametrized or 'none'}")
    return 0


def recompute(table_path: Path, parts_cache: Path, work: Path, threads: int) -> int:
    """Every row of a descriptor table recomputed as prediction computes it; a printed summary."""
    import numpy as np
    import pandas as pd

    from pairfactory.qm.descriptors import PairSolvation
    from pairfactory.qm.settings import QmSettings
    from pairfactory.qm.solvation import xtb_version

    table = pd.read_parquet(table_path)
    tag = table_path.parent.name  # results/descriptors/{dataset}/{engine_tag}/alpb.parquet
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(parts_cache / tag, work / "parts" / tag)
    settings = QmSettings.from_config({})
    if settings.engine_tag != tag:
        raise SystemExit(f"the default engine has tag {settings.engine_tag}, the table {tag}")
    solvation = PairSolvation(
        settings, work / "parts", work / "solvation", threads=threads, require_program=True
    )
    started = time.perf_counter()
    again = solvation.table(table["solute_smiles"], table["solvent_smiles"], progress=True)
    seconds = time.perf_counter() - started
    both = table["dg_solv_alpb_kcal_mol"].notna() & again["dg_solv_alpb_kcal_mol"].notna()
    difference = np.abs(
        table.loc[both, "dg_solv_alpb_kcal_mol"].to_numpy()
        - again.loc[both, "dg_solv_alpb_kcal_mol"].to_numpy()
    )
    same_geometry = (table["geometry_sha256"] == again["geometry_sha256"]) | (
        table["geometry_sha256"].isna() & again["geometry_sha256"].isna()
    )
    print(f"{table_path}: {len(table)} rows, engine {tag}, xtb {xtb_version()}, {seconds:.0f} s\n")
    print("| rows | same status | same geometry | values compared | max abs diff kcal/mol |")
    print("|---|---|---|---|---|")
    print(
        f"| {len(table)} | {int((table['status'] == again['status']).sum())} | "
        f"{int(same_geometry.sum())} | {int(both.sum())} | "
        f"{difference.max() if len(difference) else float('nan'):.2e} |"
    )
    print(f"\nsolutes optimized now (not in the copied cache): {solvation.parts.computed}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
