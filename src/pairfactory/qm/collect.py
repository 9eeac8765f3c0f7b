"""Validate all shards of a dataset/engine against the plan and write a manifest.

Every shard the plan expects must exist and be valid (schema, counts, each (system, k) exactly
once, the configured engine tag and seed); the counts must reconcile: systems × samples per system
= rows = ok + failed. Then it writes ``manifest.parquet`` (one row per shard, with its sha256),
``summary.json`` and ``summary.md`` (failures by status and by message class, per-system
interaction-energy mean/std). A missing or invalid shard is an error naming it; nothing is
written then, so the workflow does not mistake a partial set for a finished one.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pairfactory.errors import UserError
from pairfactory.qm.shards import STATUS_OK, STATUS_VALUES, ShardValidation

if TYPE_CHECKING:
    from pairfactory.qm.settings import QmSettings

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.parquet"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
# summary.md lists at most this many systems (summary.json has all of them)
MD_SYSTEM_ROWS = 50


@dataclass
class CollectResult:
    """The reconciled counts of one dataset/engine and where the manifest went."""

    dataset: str
    engine_tag: str
    n_systems: int
    n_shards: int
    n_samples: int
    ok: int
    failed: int
    by_status: dict[str, int]
    out_dir: str
    stale_shards: list[str] = field(default_factory=list)


def _duration(seconds: float) -> str:
    """A total that reads well at every scale: a laptop subset takes seconds, a cluster run days."""
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.2f} h"


def message_class(status: str, message: str | None) -> str:
    """A failure message with its particulars (numbers, quoted SMILES) masked, to count alike
    failures."""
    if not message:
        return status
    first = message.strip().splitlines()[0] if message.strip() else ""
    first = re.sub(r"'[^']*'|\"[^\"]*\"", "'…'", first)
    first = re.sub(r"\d+(?:\.\d+)?(?:e[-+]?\d+)?", "N", first)
    return f"{status}: {first[:120]}"


def collect(
    settings: QmSettings,
    dataset: str,
    pairs_dir: str | Path,
    shards_dir: str | Path,
    out_dir: str | Path,
    *,
    progress: bool = True,
) -> CollectResult:
    """Validate, reconcile and write the manifest; raises UserError if a shard is missing or
    invalid."""
    import pandas as pd
    import pyarrow.dataset as pads
    from tqdm import tqdm

    from pairfactory.fileio import file_sha256
    from pairfactory.qm.plan import plan_for_dataset
    from pairfactory.qm.shards import SHARD_SCHEMA, shard_paths, validate_shard

    shards_dir, out_dir = Path(shards_dir), Path(out_dir)
    tag = settings.engine_tag
    sampling_key = settings.sampling_key
    if shards_dir.name != tag:
        log.warning(
            "shards folder %s is not named after the configured engine tag %s", shards_dir, tag
        )
    systems, specs = plan_for_dataset(settings, pairs_dir, dataset)
    if not specs:
        raise UserError(
            f"{dataset}: the plan is empty (no systems selected by qm.datasets.{dataset}); "
            "nothing to collect"
        )

    validations: list[tuple[Any, ShardValidation]] = []
    missing: list[str] = []
    invalid: list[str] = []
    bar = tqdm(
        specs,
        desc=f"validate {dataset} shards",
        unit="shard",
        mininterval=1.0,
        disable=not progress,
    )
    for spec in bar:
        path = shards_dir / f"{spec.shard_id}.parquet"
        result = validate_shard(
            path, spec, engine_tag=tag, global_seed=settings.global_seed, sampling_key=sampling_key
        )
        validations.append((spec, result))
        if not path.is_file():
            missing.append(spec.shard_id)
        elif not result.valid:
            invalid.append(f"  {path}: " + "; ".join(result.reasons))
    if missing or invalid:
        lines = [
            f"{dataset} ({tag}): {len(specs) - len(missing) - len(invalid)} of {len(specs)} "
            "shards are complete"
        ]
        if missing:
            shown = ", ".join(missing[:20]) + (
                f" … (+{len(missing) - 20} more)" if len(missing) > 20 else ""
            )
            lines.append(f"{len(missing)} shard(s) missing in {shards_dir}: {shown}")
            lines.append(
                f"  produce them with: pairfactory optimize --config ... --dataset {dataset} "
                f"--shard {missing[0]} "
                f"--out {shards_dir / (missing[0] + '.parquet')}  (or rerun the workflow)"
            )
        if invalid:
            lines.append(f"{len(invalid)} shard(s) invalid (delete them and rerun optimize):")
            lines.extend(invalid[:20])
        raise UserError("\n".join(lines))

    expected_paths = {shards_dir / f"{spec.shard_id}.parquet" for spec in specs}
    stale = sorted(p.name for p in shard_paths(shards_dir) if p not in expected_paths)
    if stale:
        log.warning(
            "%d shard file(s) in %s are not in the current plan (left from an older plan): %s",
            len(stale),
            shards_dir,
            ", ".join(stale[:10]),
        )

    # Only the planned shards count (a stale file from an older plan is not part of this set).
    planned_paths = [str(shards_dir / f"{spec.shard_id}.parquet") for spec in specs]
    frame = (
        pads.dataset(planned_paths, schema=SHARD_SCHEMA, format="parquet")
        .to_table(
            columns=[
                "sample_id",
                "system_id",
                "k",
                "status",
                "message",
                "attempts",
                "wall_time_s",
                "n_steps",
                "interaction_energy_kcal_mol",
            ],
        )
        .to_pandas()
    )
    planned_pairs = {pair for spec in specs for pair in spec.expected_pairs()}
    n_expected = len(systems) * settings.samples_per_system
    by_status = Counter(frame.status)
    ok = by_status.get(STATUS_OK, 0)
    failed = len(frame) - ok
    problems = []
    if len(frame) != n_expected:
        problems.append(
            f"{len(frame)} samples, expected {len(systems)} systems × "
            f"{settings.samples_per_system} = {n_expected}"
        )
    if frame.sample_id.duplicated().any():
        problems.append(
            f"{int(frame.sample_id.duplicated().sum())} sample ids appear in more than one shard"
        )
    if len(set(zip(frame.system_id, frame.k, strict=True))) != len(planned_pairs):
        problems.append("not every planned (system, k) is present exactly once")
    if ok + failed != len(frame):
        problems.append(f"ok ({ok}) + failed ({failed}) != samples ({len(frame)})")
    if problems:
        raise UserError(f"{dataset} ({tag}): counts do not reconcile: " + "; ".join(problems))

    manifest = pd.DataFrame(
        [
            {
                "shard_id": spec.shard_id,
                "path": str(shards_dir / f"{spec.shard_id}.parquet"),
                "content_hash": spec.content_hash,
                "n_systems": len(spec.system_ids),
                "rows": result.rows,
                "ok": result.ok,
                "failed": result.failed,
                **{f"n_{status}": result.by_status.get(status, 0) for status in STATUS_VALUES},
                "sha256": file_sha256(shards_dir / f"{spec.shard_id}.parquet"),
            }
            for spec, result in validations
        ]
    )
    summary = _summary(dataset, tag, systems, settings.samples_per_system, frame, specs, stale)
    _write_outputs(out_dir, manifest, summary)
    result = CollectResult(
        dataset=dataset,
        engine_tag=tag,
        n_systems=len(systems),
        n_shards=len(specs),
        n_samples=len(frame),
        ok=ok,
        failed=failed,
        by_status=dict(by_status),
        out_dir=str(out_dir),
        stale_shards=stale,
    )
    log.info(
        "%s (%s): %d shards, %d samples, %d ok, %d failed -> %s",
        dataset,
        tag,
        len(specs),
        len(frame),
        ok,
        failed,
        out_dir,
    )
    return result


def _summary(
    dataset: str,
    tag: str,
    systems: Any,
    samples_per_system: int,
    frame: Any,
    specs: list[Any],
    stale: list[str],
) -> dict[str, Any]:
    failures = frame[frame.status != STATUS_OK]
    classes = Counter(
        message_class(s, m) for s, m in zip(failures.status, failures.message, strict=True)
    )
    ok_rows = frame[(frame.status == STATUS_OK) & frame.interaction_energy_kcal_mol.notna()]
    stats = ok_rows.groupby("system_id")["interaction_energy_kcal_mol"].agg(
        ["count", "mean", "std", "min", "max"]
    )
    counts = frame.groupby("system_id").agg(
        n_samples=("k", "size"), n_ok=("status", lambda s: int((s == STATUS_OK).sum()))
    )
    per_system = []
    for row in systems.itertuples():
        sid = row.system_id
        entry: dict[str, Any] = {
            "system_id": sid,
            "solute_smiles": row.solute_smiles,
            "solvent_smiles": row.solvent_smiles,
            "n_samples": int(counts.loc[sid, "n_samples"]) if sid in counts.index else 0,
            "n_ok": int(counts.loc[sid, "n_ok"]) if sid in counts.index else 0,
        }
        for name in ("mean", "std", "min", "max"):
            value = float(stats.loc[sid, name]) if sid in stats.index else float("nan")
            entry[f"interaction_energy_kcal_mol_{name}"] = None if math.isnan(value) else value
        per_system.append(entry)
    wall = frame.wall_time_s.dropna()
    return {
        "dataset": dataset,
        "engine_tag": tag,
        "n_systems": int(len(systems)),
        "samples_per_system": samples_per_system,
        "n_shards": len(specs),
        "n_samples": int(len(frame)),
        "ok": int((frame.status == STATUS_OK).sum()),
        "failed": int((frame.status != STATUS_OK).sum()),
        "by_status": {s: int((frame.status == s).sum()) for s in STATUS_VALUES},
        "failures_by_message_class": [{"class": c, "count": n} for c, n in classes.most_common()],
        "retried_samples": int((frame.attempts > 1).sum()),
        "total_attempts": int(frame.attempts.sum()),
        "systems_without_ok_sample": int(sum(1 for e in per_system if e["n_ok"] == 0)),
        "wall_time_s": {
            "total": float(wall.sum()),
            "median": float(wall.median()) if len(wall) else None,
            "p90": float(wall.quantile(0.9)) if len(wall) else None,
        },
        "stale_shards": stale,
        "systems": per_system,
    }


def _summary_markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# QM samples: {summary['dataset']} ({summary['engine_tag']})",
        "",
        f"{summary['n_systems']} systems × {summary['samples_per_system']} samples = "
        f"{summary['n_samples']} samples in {summary['n_shards']} shards: "
        f"**{summary['ok']} ok**, {summary['failed']} failed "
        f"({summary['retried_samples']} samples needed a retry, "
        f"{summary['total_attempts']} attempts in all). "
        f"{summary['systems_without_ok_sample']} systems have no ok sample.",
        "",
        "| status | samples |",
        "|---|---|",
    ]
    lines += [f"| {status} | {n} |" for status, n in summary["by_status"].items()]
    lines += ["", "## Failures by message class", ""]
    if summary["failures_by_message_class"]:
        lines += ["| class | samples |", "|---|---|"]
        lines += [
            f"| {c['class'].replace('|', '/')} | {c['count']} |"
            for c in summary["failures_by_message_class"]
        ]
    else:
        lines.append("none")
    wall = summary["wall_time_s"]
    if wall["median"] is not None:
        lines += [
            "",
            f"Wall time per sample: median {wall['median']:.2f} s, p90 {wall['p90']:.2f} s, "
            f"total {_duration(wall['total'])}.",
        ]
    if summary["stale_shards"]:
        lines += [
            "",
            f"Shard files not in the current plan (ignored): {', '.join(summary['stale_shards'])}",
        ]
    systems = summary["systems"]
    lines += [
        "",
        "## Interaction energy per system (ok samples, kcal/mol)",
        "",
        "| system_id | solute | solvent | ok/samples | mean | std |",
        "|---|---|---|---|---|---|",
    ]
    for entry in systems[:MD_SYSTEM_ROWS]:
        mean, std = (
            entry["interaction_energy_kcal_mol_mean"],
            entry["interaction_energy_kcal_mol_std"],
        )
        lines.append(
            f"| {entry['system_id']} | `{entry['solute_smiles']}` | `{entry['solvent_smiles']}` | "
            f"{entry['n_ok']}/{entry['n_samples']} | {'' if mean is None else f'{mean:.2f}'} | "
            f"{'' if std is None else f'{std:.2f}'} |"
        )
    if len(systems) > MD_SYSTEM_ROWS:
        lines.append(f"\n({len(systems) - MD_SYSTEM_ROWS} more systems in summary.json)")
    return "\n".join(lines) + "\n"


def _write_outputs(out_dir: Path, manifest: Any, summary: dict[str, Any]) -> None:
    import io

    from pairfactory.fileio import atomic_write_bytes, atomic_write_text

    # Encoded first: a manifest that cannot be encoded leaves no summaries behind either.
    buffer = io.BytesIO()
    manifest.to_parquet(buffer, index=False)
    payload = buffer.getvalue()
    # The manifest last: the workflow's target, it appears only when the summaries are there too.
    atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=2, sort_keys=False))
    atomic_write_text(out_dir / SUMMARY_MD, _summary_markdown(summary))
    atomic_write_bytes(out_dir / MANIFEST_NAME, payload)
