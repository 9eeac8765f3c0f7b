"""How fast the workflow plans the full-scale run, and what adding 1 % more pairs costs.

For each dataset whose raw file is available, in a scratch working directory:

1. curate the first 99 % of the raw rows (the `pairs` checkpoint, through Snakemake);
2. dry-run the full-scale plan (config/full.yaml restricted to that dataset): wall time and the
   number of jobs by rule;
3. mark every planned shard as done (empty placeholder files; nothing is optimized);
4. put back the full raw file (the 1 % appended), re-curate, and dry-run again: wall time and the
   optimize jobs it schedules. Placeholders carry no Snakemake metadata, so the dry-run schedules
   the new shards (missing files); the shards whose *content* changed (the last, partial system
   block, which a real run reruns through its `content_hash` param) are counted from the plan diff.

Finally the same dry-run for all available datasets together (the whole full-scale config).

    .venv/bin/python bench/plan.py [--data-dir ../shared/data] [--workdir /tmp/pf-bench] [--keep]

Prints a Markdown table. Takes ~2-4 minutes on 2 cores (curation of Chromophore dominates).
"""

from __future__ import annotations

import argparse
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
SNAKEFILE = REPO_ROOT / "Snakefile"
DATA_KEYS = {
    "chromophore": "chromophore_csv",
    "freesolv": "freesolv_txt",
    "freesolv_cgib": "combisolv_csv",
    "mnsol": "mnsol_csv",
    "combisolv": "combisolv_csv",
}
_JOB_STATS_RE = re.compile(r"^(\w+)\s+(\d+)$", re.MULTILINE)
_SHARD_RE = re.compile(r"output: (results/shards/\S+\.parquet)")


@dataclass
class DatasetBench:
    dataset: str
    raw_rows: int = 0
    systems: int = 0
    jobs: dict[str, int] = field(default_factory=dict)
    dry_run_s: float = 0.0
    curate_s: float = 0.0
    added_rows: int = 0
    added_systems: int = 0
    replan_s: float = 0.0
    scheduled_new_shards: int = 0
    changed_shards: int = 0


def snakemake(workdir: Path, *args: str) -> tuple[str, float]:
    start = time.perf_counter()
    proc = subprocess.run(
        [
            str(SNAKEMAKE),
            "--snakefile",
            str(SNAKEFILE),
            "--directory",
            str(workdir),
            "--cores",
            "2",
            *args,
        ],
        capture_output=True,
        text=True,
        cwd=workdir,
    )
    elapsed = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(
            f"snakemake {' '.join(args)} failed in {workdir}:\n"
            f"{proc.stdout[-3000:]}{proc.stderr[-3000:]}"
        )
    return proc.stdout + proc.stderr, elapsed


def job_counts(output: str) -> dict[str, int]:
    if "Job stats:" not in output:
        return {}
    table = output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {rule: int(n) for rule, n in _JOB_STATS_RE.findall(table)}


def truncated_copy(source: Path, target: Path, fraction: float) -> tuple[int, int]:
    """Header lines + the first ``fraction`` of the data rows (one row per line in these files)."""
    raw = source.read_bytes()
    lines = raw.splitlines(keepends=True)
    if source.name == "database.txt":  # FreeSolv: '#' comment header
        n_header = sum(1 for line in lines if line.startswith(b"#"))
    else:  # CSV with one header row
        n_header = 1
    data = lines[n_header:]
    keep = math.floor(len(data) * fraction)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"".join(lines[:n_header] + data[:keep]))
    return len(data), len(data) - keep


def full_config(data: dict[str, str | None], datasets: list[str]) -> dict:
    config = yaml.safe_load((REPO_ROOT / "config" / "full.yaml").read_text())
    config["data"] = data
    config["datasets"] = datasets
    config["qm"]["datasets"] = {d: v for d, v in config["qm"]["datasets"].items() if d in datasets}

    def kept(table: str) -> bool:
        return table.split("/")[0] in datasets

    evaluate = config["evaluate"]
    evaluate["tables"] = [t for t in evaluate["tables"] if kept(t)]
    evaluate["table_hparams"] = {
        t: v for t, v in evaluate.get("table_hparams", {}).items() if kept(t)
    }
    config["final_models"] = [e for e in config["final_models"] if kept(e["table"])]
    return config


def plan(workdir: Path, dataset: str) -> dict[str, str]:
    """shard id -> content hash, as the workflow sees it (pairfactory.qm.plan)."""
    sys.path.insert(0, str(REPO_ROOT / "src"))
    from pairfactory.config import load_config
    from pairfactory.qm.plan import plan_for_dataset
    from pairfactory.qm.settings import QmSettings

    config = load_config(workdir / "config.yaml")
    if dataset not in config["qm"]["datasets"]:
        return {}
    settings = QmSettings.from_config(config)
    _, specs = plan_for_dataset(settings, workdir / "results" / "pairs", dataset)
    return {spec.shard_id: spec.content_hash for spec in specs}


def bench_dataset(dataset: str, raw: Path, root: Path) -> DatasetBench:
    result = DatasetBench(dataset)
    workdir = root / dataset
    raw_copy = workdir / "raw" / raw.name
    result.raw_rows, result.added_rows = truncated_copy(raw, raw_copy, 0.99)
    data = {key: None for key in set(DATA_KEYS.values())}
    data[DATA_KEYS[dataset]] = str(raw_copy)
    config = full_config(data, [dataset])
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

    _, result.curate_s = snakemake(workdir, f"results/pairs/{dataset}")
    output, result.dry_run_s = snakemake(workdir, "-n")
    result.jobs = job_counts(output)
    before = plan(workdir, dataset)
    result.systems = _n_systems(workdir, dataset)

    # every planned shard "done" (placeholders), then the 1 % appended and re-curated
    for path in _SHARD_RE.findall(output):
        (workdir / path).parent.mkdir(parents=True, exist_ok=True)
        (workdir / path).touch()
    shutil.copyfile(raw, raw_copy)
    snakemake(workdir, f"results/pairs/{dataset}")
    output, result.replan_s = snakemake(workdir, "-n")
    result.scheduled_new_shards = job_counts(output).get("optimize", 0)
    after = plan(workdir, dataset)
    result.added_systems = _n_systems(workdir, dataset) - result.systems
    result.changed_shards = sum(
        1 for shard, digest in after.items() if shard in before and before[shard] != digest
    )
    assert result.scheduled_new_shards == len(set(after) - set(before)), (
        "dry-run and plan disagree on new shards"
    )
    return result


def _n_systems(workdir: Path, dataset: str) -> int:
    from pairfactory.qm.plan import load_systems

    return len(load_systems(workdir / "results" / "pairs", dataset))


def bench_all(raws: dict[str, Path], root: Path) -> tuple[dict[str, int], float]:
    workdir = root / "all"
    workdir.mkdir(parents=True, exist_ok=True)
    data = {key: None for key in set(DATA_KEYS.values())}
    for dataset, raw in raws.items():
        data[DATA_KEYS[dataset]] = str(raw)
    config = full_config(data, list(raws))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    snakemake(workdir, *[f"results/pairs/{d}" for d in raws])
    output, elapsed = snakemake(workdir, "-n")
    return job_counts(output), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--data-dir",
        default=str(REPO_ROOT.parent / "shared" / "data"),
        help="folder with mnsol/ and combisolv_exp/ (default: %(default)s)",
    )
    parser.add_argument(
        "--workdir", default=None, help="scratch folder (default: a new temporary one)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")

    data_dir = Path(args.data_dir)
    candidates = {
        "chromophore": REPO_ROOT / "data" / "chromophore" / "DB_for_chromophore_Sci_Data_rev02.csv",
        "freesolv": REPO_ROOT / "data" / "freesolv" / "database.txt",
        "freesolv_cgib": data_dir / "combisolv_exp" / "CombiSolv-Exp-8780.csv",
        "mnsol": data_dir / "mnsol" / "mnsol.csv",
        "combisolv": data_dir / "combisolv_exp" / "CombiSolv-Exp-8780.csv",
    }
    raws = {d: p for d, p in candidates.items() if p.is_file()}
    missing = sorted(set(candidates) - set(raws))
    root = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="pf-bench-plan-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        results = []
        for dataset, raw in raws.items():
            print(f"benchmarking {dataset} ...", file=sys.stderr, flush=True)
            results.append(bench_dataset(dataset, raw, root))
        print("benchmarking all datasets together ...", file=sys.stderr, flush=True)
        all_jobs, all_s = bench_all(raws, root)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(
        "## Full-scale plan (config/full.yaml): dry-run, and re-planning after adding 1 % more "
        "rows\n"
    )
    print(
        f"snakemake 9.27.1, {os.cpu_count()} CPUs; wall-clock seconds of the whole "
        "`snakemake -n` process."
    )
    if missing:
        print(f"Not available (no raw file): {', '.join(missing)}.")
    print()
    print(
        "| dataset | raw rows | QM systems | optimize jobs | evaluate jobs | all jobs | dry-run s "
        "| +1 % rows | new systems | re-plan dry-run s | new shard jobs "
        "| changed shards (params) | curation s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r.dataset} | {r.raw_rows} | {r.systems if r.jobs.get('optimize') else '–'} "
            f"| {r.jobs.get('optimize', 0)} | {r.jobs.get('evaluate', 0)} "
            f"| {r.jobs.get('total', 0)} | {r.dry_run_s:.1f} | {r.added_rows} "
            f"| {r.added_systems if r.jobs.get('optimize') else '–'} | {r.replan_s:.1f} "
            f"| {r.scheduled_new_shards} | {r.changed_shards} | {r.curate_s:.1f} |"
        )
    print(
        f"| **all** | | | {all_jobs.get('optimize', 0)} | {all_jobs.get('evaluate', 0)} "
        f"| {all_jobs.get('total', 0)} "
        f"| {all_s:.1f} | | | | | | |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
