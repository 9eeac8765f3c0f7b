"""Column names, dtypes, pyarrow schemas and reject reason codes of the pair and reject tables.

Other stages import these names instead of spelling column strings, so a rename happens here once.
The layout follows docs/architecture.md section 1.
"""

from __future__ import annotations

import re

import pyarrow as pa

# --- pair-table columns -------------------------------------------------------------------------
PAIR_ID = "pair_id"
DATASET = "dataset"
TARGET = "target"
SOLUTE_SMILES = "solute_smiles"
SOLVENT_SMILES = "solvent_smiles"
VALUE = "value"
UNIT = "unit"
SOURCE_ROW = "source_row"
SOLID_STATE = "solid_state"
DUPLICATE_PAIR = "duplicate_pair"
SMILES_OVERRIDE = "smiles_override"
SOLUTE_NAME = "solute_name"
SOLVENT_NAME = "solvent_name"
SOURCE_TAGS = "source_tags"

PAIR_SCHEMA = pa.schema(
    [
        pa.field(PAIR_ID, pa.string(), nullable=False),
        pa.field(DATASET, pa.string(), nullable=False),
        pa.field(TARGET, pa.string(), nullable=False),
        pa.field(SOLUTE_SMILES, pa.string(), nullable=False),
        pa.field(SOLVENT_SMILES, pa.string(), nullable=False),
        pa.field(VALUE, pa.float64(), nullable=False),
        pa.field(UNIT, pa.string(), nullable=False),
        pa.field(SOURCE_ROW, pa.int64(), nullable=False),
        pa.field(SOLID_STATE, pa.bool_(), nullable=False),
        pa.field(DUPLICATE_PAIR, pa.bool_(), nullable=False),
        pa.field(SMILES_OVERRIDE, pa.bool_(), nullable=False),
        pa.field(SOLUTE_NAME, pa.string(), nullable=True),
        pa.field(SOLVENT_NAME, pa.string(), nullable=True),
        pa.field(SOURCE_TAGS, pa.string(), nullable=True),
    ]
)
PAIR_COLUMNS: tuple[str, ...] = tuple(PAIR_SCHEMA.names)

# --- reject-table columns -----------------------------------------------------------------------
REASON = "reason"
DETAIL = "detail"
SOLUTE_RAW = "solute_raw"
SOLVENT_RAW = "solvent_raw"
VALUE_RAW = "value_raw"

REJECT_SCHEMA = pa.schema(
    [
        pa.field(DATASET, pa.string(), nullable=False),
        # null when the row is rejected for every target of the dataset (a SMILES problem, say)
        pa.field(TARGET, pa.string(), nullable=True),
        pa.field(SOURCE_ROW, pa.int64(), nullable=False),
        pa.field(REASON, pa.string(), nullable=False),
        pa.field(DETAIL, pa.string(), nullable=False),
        pa.field(SOLUTE_RAW, pa.string(), nullable=True),
        pa.field(SOLVENT_RAW, pa.string(), nullable=True),
        pa.field(VALUE_RAW, pa.string(), nullable=True),
    ]
)
REJECT_COLUMNS: tuple[str, ...] = tuple(REJECT_SCHEMA.names)

PAIR_ID_PATTERN = re.compile(r"^[0-9a-f]{16}$")

# --- reject reasons (machine codes) -> what they mean -------------------------------------------
MISSING_VALUE = "missing_value"
NON_NUMERIC_VALUE = "non_numeric_value"
NON_FINITE_VALUE = "non_finite_value"
NON_POSITIVE_LIFETIME = "non_positive_lifetime"
MISSING_SMILES = "missing_smiles"
INVALID_SMILES = "invalid_smiles"
GAS_PHASE_SOLVENT = "gas_phase_solvent"
SOLID_STATE_EXCLUDED = "solid_state_excluded"
CHARGED = "charged"
RADICAL = "radical"
MULTI_FRAGMENT = "multi_fragment"
UNSUPPORTED_ELEMENT = "unsupported_element"
INCONSISTENT_SOURCE_ENTRY = "inconsistent_source_entry"

REASONS: dict[str, str] = {
    MISSING_VALUE: "the target value is empty or NaN",
    NON_NUMERIC_VALUE: "the target value is text that is not a number",
    NON_FINITE_VALUE: "the target value is infinite",
    NON_POSITIVE_LIFETIME: "a lifetime <= 0 ns has no logarithm",
    MISSING_SMILES: "the solute or solvent SMILES cell is empty",
    INVALID_SMILES: "RDKit cannot parse or sanitize the solute or solvent SMILES",
    GAS_PHASE_SOLVENT: (
        "the solvent is the literal 'gas' (a gas-phase measurement, no solvent molecule)"
    ),
    SOLID_STATE_EXCLUDED: (
        "solid-state/film row (solvent == solute) and solid-state rows were excluded"
    ),
    CHARGED: (
        "the molecule has a net formal charge, or an atom charged +-2 (the dataset holds "
        "neutral molecules only)"
    ),
    RADICAL: "the molecule has unpaired electrons (a SMILES error for these closed-shell datasets)",
    MULTI_FRAGMENT: "the SMILES holds more than one disconnected molecule",
    UNSUPPORTED_ELEMENT: (
        "an element outside pairfactory.pairs.elements.SUPPORTED_ELEMENTS (the featurizer would "
        "see an anonymous atom)"
    ),
    INCONSISTENT_SOURCE_ENTRY: (
        "the source entry contradicts itself and the curated override table rejects it"
    ),
}
