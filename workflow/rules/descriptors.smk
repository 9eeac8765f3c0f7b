# Per-system descriptors: the implicit-solvent ΔG_solv (GFN2-xTB/ALPB, the xtb program) of every
# system of a dataset, from the engine's isolated-molecule geometries (the parts cache).


rule solvation:
    input:
        pairs_ready,
    output:
        f"{DESCRIPTORS_DIR}/{{dataset}}/{{tag}}/alpb.parquet",
    log:
        "results/logs/solvation/{dataset}/{tag}.log",
    conda:
        "../../envs/cpu.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=lambda wildcards, attempt: 120 * attempt,
    params:
        config_file=Path(CONFIG_FILE),
        pairs_dir=PAIRS_DIR,
        # a re-curation that adds or drops a system rebuilds the table (else its new pairs would
        # read as missing); one that leaves the systems as they were does not
        systems_sha256=dataset_systems_sha256,
        # the extra pairs' dataset needs only the systems in their solvents
        solvents=descriptor_solvents,
    shell:
        "pairfactory solvation --config {params.config_file} --dataset {wildcards.dataset} "
        "--pairs-dir {params.pairs_dir} --out {output} {params.solvents} --no-progress "
        "> {log} 2>&1"
