# Aggregate every evaluation into Markdown/CSV tables and plots.


rule report:
    input:
        evaluate_outputs(),
    output:
        markdown=f"{REPORT_DIR}/results.md",
        table=f"{REPORT_DIR}/results.csv",
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
        results=lambda wildcards, input: Path(input[0]).parents[5],
        out_dir=lambda wildcards, output: os.path.dirname(output.markdown),
    shell:
        "pairfactory report --results {params.results} --out-dir {params.out_dir} > {log} 2>&1"
