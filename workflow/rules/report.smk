# Aggregate every evaluation into Markdown/CSV tables, plots and one self-contained HTML page with
# 3D views of the noisy complexes of every dataset with QM samples.


rule report:
    input:
        folds=evaluate_outputs(),
        # the shards are complete once their manifest exists
        manifests=report_manifests(),
    output:
        markdown=f"{REPORT_DIR}/results.md",
        table=f"{REPORT_DIR}/results.csv",
        html=f"{REPORT_DIR}/report.html",
    log:
        "results/logs/report.log",
    conda:
        "../../envs/cpu.yml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=15,
    params:
        # the evaluate root above {dataset}/{target}/{model}/{split}/r{repeat}-f{fold}/metrics.json
        results=lambda wildcards, input: Path(input.folds[0]).parents[5],
        shards=report_shard_flags,
        out_dir=lambda wildcards, output: os.path.dirname(output.markdown),
    shell:
        "pairfactory report --results {params.results} --out-dir {params.out_dir} "
        "{params.shards} > {log} 2>&1"
