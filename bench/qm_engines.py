"""Cost of random complexes and of one noisy optimization per engine, on small real pairs.

Prints a Markdown table: per pair and engine, atoms, the time to sample a complex
(``sample_complex``: two ETKDG embeddings + MMFF + placement), and for the optimizations of
``--samples`` random complexes: wall seconds median / max, optimizer steps median, statuses.
PySCF (HF/STO-3G, GAU_LOOSE) runs only on the pairs named with ``--pyscf-pairs`` since it is
~100× slower than GFN2-xTB.

example:
  .venv/bin/python bench/qm_engines.py --samples 5 --threads 1
  .venv/bin/python bench/qm_engines.py --samples 3 --engines xtb pyscf --pyscf-pairs water·water
"""

from __future__ import annotations

import argparse
import collections
import statistics
import sys
import time

PAIRS: dict[str, tuple[str, str]] = {
    "water·water": ("O", "O"),
    "methanol·water": ("CO", "O"),
    "phenol·water": ("c1ccccc1O", "O"),
    "benzoic acid·chloroform": ("OC(=O)c1ccccc1", "ClC(Cl)Cl"),
    "7-diethylamino-coumarin·ethanol": ("CCN(CC)c1ccc2ccc(=O)oc2c1", "CCO"),
}
ENGINE_CONFIGS = {
    "xtb": {"name": "xtb"},  # GFN2-xTB, BFGS, fmax 0.05 eV/Å, ≤ 300 steps
    "pyscf": {
        "name": "pyscf",
        "pyscf": {
            "method": "HF",
            "basis": "sto-3g",
            "convergence_set": "GAU_LOOSE",
            "scf_conv_tol": 1e-7,
            "max_steps": 100,
        },
    },
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--samples", type=int, default=5, help="random complexes per pair (k = 0..N-1)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-solvent", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--engines", nargs="+", default=["xtb"], choices=sorted(ENGINE_CONFIGS))
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    parser.add_argument("--pyscf-pairs", nargs="+", default=["water·water"], choices=list(PAIRS))
    parser.add_argument(
        "--timeout-s", type=float, default=None, help="per-optimization budget (default: engine's)"
    )
    args = parser.parse_args(argv)

    from tqdm import tqdm

    from pairfactory.qm.engines import build_engine
    from pairfactory.qm.samples import SamplingSettings, sample_complex

    settings = SamplingSettings(n_solvent=args.n_solvent)
    rows = []
    for engine_name in args.engines:
        engine = build_engine(ENGINE_CONFIGS[engine_name], threads=args.threads)
        pairs = args.pyscf_pairs if engine_name == "pyscf" else args.pairs
        for pair in pairs:
            solute, solvent = PAIRS[pair]
            sample_s, wall, steps = [], [], []
            statuses: collections.Counter[str] = collections.Counter()
            n_atoms = 0
            for k in tqdm(
                range(args.samples), desc=f"{engine_name} {pair}", unit="opt", file=sys.stderr
            ):
                t0 = time.perf_counter()
                cx = sample_complex(solute, solvent, pair, k, args.seed, settings)
                sample_s.append(time.perf_counter() - t0)
                n_atoms = cx.n_atoms
                result = engine.optimize(
                    cx.atomic_numbers,
                    cx.positions_angstrom,
                    cx.total_charge,
                    cx.multiplicity,
                    args.timeout_s,
                )
                wall.append(result.wall_time_s)
                steps.append(result.n_steps)
                statuses[result.status.value] += 1
            rows.append(
                (
                    pair,
                    engine.method,
                    n_atoms,
                    statistics.median(sample_s),
                    statistics.median(wall),
                    max(wall),
                    statistics.median(steps),
                    ", ".join(f"{s} {n}" for s, n in sorted(statuses.items())),
                )
            )
    print(
        f"\n{args.samples} random complexes per pair, n_solvent={args.n_solvent}, "
        f"threads={args.threads}\n"
    )
    print(
        "| pair | engine | atoms | sample_complex s (median) | optimize s (median) "
        "| optimize s (max) | steps (median) | statuses |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for pair, method, n, t_sample, t_med, t_max, n_steps, status in rows:
        print(
            f"| {pair} | {method} | {n} | {t_sample:.3f} | {t_med:.2f} | {t_max:.2f} "
            f"| {n_steps:g} | {status} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
