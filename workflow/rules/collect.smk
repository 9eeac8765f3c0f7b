# Per dataset and engine: validate every shard against the plan, reconcile the sample counts and
# write the manifest.


rule collect:
    input:
        shard_files,
    output:
        manifest=f"{MANIFEST_DIR}/{{dataset}}/{{tag}}/manifest.parquet",
        summary=f"{MANIFEST_DIR}/{{dataset}}/{{tag}}/summary.json",
        summary_md=f"{MANIFEST_DIR}/{{dataset}}/{{tag}}/summary.md",
    log:
        "results/logs/collect/{dataset}/{tag}.log",
    conda:
        "../../envs/cpu.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # a Path: Snakemake records only builtin-typed params, so a new snapshot (any config
        # change) is no rerun trigger by itself; the params below are
        config_file=Path(CONFIG_FILE),
        pairs_dir=PAIRS_DIR,
        shards_dir=lambda wildcards: f"{SHARDS_DIR}/{wildcards.dataset}/{wildcards.tag}",
        out_dir=lambda wildcards, output: os.path.dirname(output.manifest),
    shell:
        "pairfactory collect --config {params.config_file} --dataset {wildcards.dataset} "
        "--pairs-dir {params.pairs_dir} --shards-dir {params.shards_dir} "
        "--out-dir {params.out_dir} > {log} 2>&1"
