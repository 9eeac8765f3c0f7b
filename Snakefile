# pairfactory: noisy QM geometries of solute-solvent pairs and dual-graph models trained on them.
# The table of contents of the pipeline; every rule calls the `pairfactory` CLI (docs/workflow.md).
#
#   raw data --pairs--> pair tables --optimize (per shard)--> shards --collect--> manifest
#   pair tables --evaluate (per fold)--> metrics --report--> tables, plots
#   pair tables --final_model--> model folders (`pairfactory predict`)


from snakemake.utils import validate


configfile: "config.yaml"


validate(config, "src/pairfactory/schemas/config.schema.yaml")


include: "workflow/rules/common.smk"
include: "workflow/rules/pairs.smk"
include: "workflow/rules/qm.smk"
include: "workflow/rules/collect.smk"
include: "workflow/rules/descriptors.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        final_outputs(),
