# Curation: raw dataset files -> pair tables. A checkpoint, because the shard plan (how many
# optimize jobs a dataset has) is only known once its pair tables exist.


checkpoint pairs:
    input:
        unpack(raw_inputs),
    output:
        directory(f"{PAIRS_DIR}/{{dataset}}"),
    log:
        "results/logs/pairs/{dataset}.log",
    conda:
        "../../envs/cpu.yml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=30,
    params:
        # content, not mtime, decides re-curation (mtime is not a rerun trigger in the profiles)
        raw_sha256=raw_hashes,
        files=raw_file_args,
        options=pairs_options,
        # a user's CSV is read as its csv_datasets entry says (in raw_sha256); the rest of the
        # config does not re-curate it (a Path param is no rerun trigger)
        config_file=Path(CONFIG_FILE),
        # the CLI writes {out_dir}/{dataset}/
        out_dir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "pairfactory pairs --dataset {wildcards.dataset} --config {params.config_file} "
        "{params.files} {params.options} --out-dir {params.out_dir} > {log} 2>&1"
