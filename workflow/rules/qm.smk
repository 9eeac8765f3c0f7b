# Noisy QM geometries: one job per shard (a block of systems x a block of sample indices), never
# per sample, so that the full Chromophore plan stays a few thousand jobs. The engine tag (a hash of
# the engine settings) is part of the path: changing the engine re-runs that engine's shards only.


rule optimize:
    output:
        f"{SHARDS_DIR}/{{dataset}}/{{tag}}/{{shard}}.parquet",
    log:
        "results/logs/optimize/{dataset}/{tag}/{shard}.log",
    conda:
        "../../envs/cpu.yml"
    threads: config["qm"]["threads"]
    resources:
        # grow with each retry: a shard that ran out of memory or time gets more the next attempt
        mem_mb=lambda wildcards, attempt: config["qm"]["mem_mb"] * attempt,
        runtime=lambda wildcards, attempt: config["qm"]["runtime_min"] * attempt,
    params:
        # a Path: Snakemake records only builtin-typed params, so a new snapshot (any config
        # change) is no rerun trigger by itself; the params below are
        config_file=Path(CONFIG_FILE),
        # what the shard computes: its systems, their SMILES and its sample indices (pairfactory.qm.plan)
        content_hash=shard_content_hash,
        seed=config["seed"],
        sampling=sampling_settings(),
        pairs_dir=PAIRS_DIR,
    shell:
        # first log line: where the shard ran (the SLURM job id makes a shard traceable to sacct/squeue)
        'echo "optimize {wildcards.dataset}/{wildcards.shard} on $(hostname), SLURM job ${{SLURM_JOB_ID:-none}}" > {log}; '
        "pairfactory optimize --config {params.config_file} --dataset {wildcards.dataset} "
        "--pairs-dir {params.pairs_dir} --shard {wildcards.shard} --out {output} "
        "--threads {threads} >> {log} 2>&1"
