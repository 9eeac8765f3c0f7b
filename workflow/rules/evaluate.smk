# Model evaluation: one job per table x model x split x repeat x fold.


rule evaluate:
    input:
        # waits for the curation without depending on its files: a re-curation that leaves this
        # table's content unchanged re-runs no fold (param `table_sha256` below decides)
        pairs_ready,
        extra_pairs_ready,
        unpack(evaluate_sample_inputs),
    output:
        metrics=f"{EVALUATE_DIR}/{{dataset}}/{{target}}/{{model}}/{{split}}/r{{repeat}}-f{{fold}}/metrics.json",
        predictions=f"{EVALUATE_DIR}/{{dataset}}/{{target}}/{{model}}/{{split}}/r{{repeat}}-f{{fold}}/predictions.parquet",
        history=f"{EVALUATE_DIR}/{{dataset}}/{{target}}/{{model}}/{{split}}/r{{repeat}}-f{{fold}}/history.csv",
        model=f"{EVALUATE_DIR}/{{dataset}}/{{target}}/{{model}}/{{split}}/r{{repeat}}-f{{fold}}/model.pt",
    log:
        "results/logs/evaluate/{dataset}/{target}/{model}/{split}/r{repeat}-f{fold}.log",
    conda:
        "../../envs/gpu.yml"
    threads: config["evaluate"]["threads"]
    resources:
        mem_mb=lambda wildcards, attempt: config["evaluate"]["mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: config["evaluate"]["runtime_min"] * attempt,
    params:
        # a Path: Snakemake records only builtin-typed params, so a new snapshot (any config
        # change) is no rerun trigger by itself; the params below are
        config_file=Path(CONFIG_FILE),
        table=pair_table_path,
        table_sha256=pair_table_sha256,
        # the protocol settings are what the result depends on; other config keys are not
        protocol=lambda wildcards: evaluate_protocol(
            f"{wildcards.dataset}/{wildcards.target}", wildcards.model
        ),
        seed=config["seed"],
        out_dir=lambda wildcards, output: os.path.dirname(output.metrics),
        samples=evaluate_sample_flags,
    shell:
        "pairfactory evaluate --config {params.config_file} --pairs {params.table} "
        "--model {wildcards.model} --split {wildcards.split} --fold {wildcards.fold} "
        "--repeat {wildcards.repeat} --threads {threads} --out-dir {params.out_dir} "
        "{params.samples} > {log} 2>&1"
