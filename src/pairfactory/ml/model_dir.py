"""The folder of a final model: what `pairfactory train` writes and `load_model` reads.

Layout::

    <dir>/model.json                 the card (ModelCard), written last: marks a finished model
    <dir>/training_molecules.parquet the training pairs' canonical SMILES (role, smiles), the
                                     holdout's left out: the applicability domain's
                                     fingerprints are rebuilt from them (folders from before
                                     2026-12-02 hold the holdout's molecules too)
    <dir>/holdout_predictions.parquet  the ensemble on the holdout (y_true, y_pred, σ columns, and
                                     solute_similarity: to the nearest training solute)
    <dir>/members/m<i>/weights.pt    one ensemble member: weights only (weights_only=True loads)
    <dir>/members/m<i>/history.csv   its learning curve
    <dir>/members/m<i>/member.json   its seed, best epoch, holdout RMSE, target and σ scale
    <dir>/members/m<i>/checkpoint.pt while it trains: the resumable state (ml.checkpoint)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pairfactory.errors import UserError
from pairfactory.fileio import atomic_write_text
from pairfactory.ml.featurize import ATOM_FEATURE_DIM, BOND_FEATURE_DIM, FEATURE_SPEC_HASH

CARD_FILE = "model.json"
MOLECULES_FILE = "training_molecules.parquet"
HOLDOUT_FILE = "holdout_predictions.parquet"
MEMBERS_DIR = "members"
MEMBER_FILE = "member.json"
WEIGHTS_FILE = "weights.pt"
HISTORY_FILE = "history.csv"
CHECKPOINT_FILE = "checkpoint.pt"
# Bump when the folder layout or the card's meaning changes. 2: the card's sigma_scale calibrates
# the whole ensemble's σ (members' σ and spread together), as evaluate scores it; before, each
# member was calibrated alone and the spread was left out.
MODEL_DIR_FORMAT = 2


def featurization_spec() -> dict[str, Any]:
    """What a model's inputs mean: a model folder is usable only with the same spec."""
    from pairfactory.ml.graph_cache import rdkit_version

    return {
        "spec_hash": FEATURE_SPEC_HASH,
        "atom_feature_dim": ATOM_FEATURE_DIM,
        "bond_feature_dim": BOND_FEATURE_DIM,
        "rdkit_version": rdkit_version(),
    }


def member_dir(model_dir: str | Path, member: int) -> Path:
    return Path(model_dir) / MEMBERS_DIR / f"m{member}"


@dataclass(frozen=True)
class MemberRecord:
    """One ensemble member (``member.json``)."""

    member: int
    seed: int
    best_epoch: int
    epochs_run: int
    holdout_rmse: float
    target_mean: float  # the model outputs (y - mean) / std
    target_std: float
    # calibrates this member's own σ on the holdout (None: no σ); the card's sigma_scale is
    # the one predictions use
    sigma_scale: float | None
    seconds: float


@dataclass
class ModelCard:
    """Everything about a final model besides its weights (``model.json``)."""

    model: str
    hparams: dict[str, Any]
    dataset: str
    target: str
    unit: str
    featurization: dict[str, Any]
    training_table: dict[str, Any]  # path, sha256, rows, pairs_used, pairs_rejected
    holdout: dict[str, Any]  # fraction, seed, n
    domain: dict[str, Any]  # TrainingDomain.summary()
    metrics: dict[str, Any]  # the ensemble on the holdout
    members: list[MemberRecord]
    settings: dict[str, Any]  # TrainSettings
    samples: dict[str, Any] | None  # the QM samples and descriptors used, if any
    versions: dict[str, str]
    created: str
    code_commit: str | None = None
    # per-pair inputs besides the graphs (alpb_input): names, descriptor table, QM engine;
    # None for a model that reads none
    inputs: dict[str, Any] | None = None
    # calibrates the predictive σ on the holdout (ml.predictor.predictive_sigma: the members' own
    # σ and their spread together); None: a single point-prediction model, which has no σ
    sigma_scale: float | None = None
    # with sigma_scale: the σ added at novelty 1 (a solute unlike every training solute), in
    # target units (ml.uncertainty.SigmaCalibration); None on folders from before it, which
    # calibrate with sigma_scale alone
    novelty_sigma: float | None = None
    format: int = MODEL_DIR_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"


def write_card(model_dir: str | Path, card: ModelCard) -> Path:
    path = Path(model_dir) / CARD_FILE
    atomic_write_text(path, card.to_json())
    return path


def read_card(model_dir: str | Path) -> ModelCard:
    """The card of a finished model folder; a folder from another featurization or layout
    version is refused with what differs and how to fix it."""
    model_dir = Path(model_dir)
    path = model_dir / CARD_FILE
    if not path.is_file():
        hint = (
            "training has not finished (members/ exists); rerun `pairfactory train` to resume"
            if (model_dir / MEMBERS_DIR).is_dir()
            else "train one with `pairfactory train`"
        )
        raise UserError(f"{model_dir} is not a model folder: no {CARD_FILE} ({hint})")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise UserError(f"{path} is not valid JSON ({err}); retrain the model") from err
    if raw.get("format") != MODEL_DIR_FORMAT:
        raise UserError(
            f"{model_dir}: model folder format {raw.get('format')!r}, this pairfactory reads "
            f"format {MODEL_DIR_FORMAT}; retrain it with this version (`pairfactory train` with "
            "the same settings and --out-dir: finished members are reused, only the card is "
            "rebuilt)"
        )
    spec = raw.get("featurization", {})
    if spec.get("spec_hash") != FEATURE_SPEC_HASH:
        raise UserError(
            f"{model_dir}: trained with featurization {spec.get('spec_hash')!r}, this pairfactory "
            f"featurizes with {FEATURE_SPEC_HASH!r} (the atom or bond features changed); retrain "
            "the model with this version, or use the pairfactory version it was trained with "
            f"({raw.get('versions', {}).get('pairfactory', 'unknown')})"
        )
    raw["members"] = [MemberRecord(**m) for m in raw["members"]]
    return ModelCard(**raw)
