# Final models: one job per final_models entry (a table and a model, an ensemble of seeds).


rule final_model:
    input:
        # as evaluate: waits for the curation; the table's content hash (a param) decides reruns
        pairs_ready,
        extra_pairs_ready,
        unpack(final_model_sample_inputs),
    output:
        # the card is written last; the member folders (weights, checkpoints) are not outputs, so
        # Snakemake never deletes a checkpoint a rerun after a time limit resumes from
        card=f"{MODELS_DIR}/{{dataset}}/{{target}}/{{model}}/model.json",
    log:
        "results/logs/train/{dataset}/{target}/{model}.log",
    conda:
        "../../envs/gpu.yml"
    threads: config["train"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: config["train"]["mem_mb"] * attempt,
        runtime=config["train"]["runtime_min"],
    params:
        config_file=Path(CONFIG_FILE),
        table=pair_table_path,
        table_sha256=pair_table_sha256,
        settings=final_model_settings,
        ensemble=lambda wildcards: final_model_entry(wildcards).get("ensemble", 1),
        out_dir=lambda wildcards, output: os.path.dirname(output.card),
        samples=evaluate_sample_flags,
        hparams=final_model_hparams_flag,
    shell:
        "pairfactory train --config {params.config_file} --pairs {params.table} "
        "--model {wildcards.model} --ensemble {params.ensemble} --threads {threads} "
        "--out-dir {params.out_dir} {params.samples} {params.hparams} --no-progress "
        "> {log} 2>&1"
