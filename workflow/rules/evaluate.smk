# Evaluation of every round on the test split, and the run's summary table.


def round_labels(wildcards):
    return [] if int(wildcards.n) == 0 else [f"{RESULTS}/round-{wildcards.n}/labels.parquet"]


rule evaluate:
    input:
        embeddings=f"{RESULTS}/round-{{n}}/embeddings/test",
        truth=rules.manifest.output.truth,
        model=f"{RESULTS}/round-{{n}}/model.pt",
        labels=round_labels,
    output:
        f"{RESULTS}/round-{{n}}/metrics.json",
    params:
        labels=lambda wc, input: f"--labels {input.labels}" if input.labels else "",
    log:
        f"{RESULTS}/logs/round-{{n}}/evaluate.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/evaluate.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{CVGL} evaluate --embeddings {input.embeddings} --manifest {RESULTS}/manifest --round {wildcards.n} "
        "--model {input.model} {params.labels} --out {output} > {log} 2>&1"


rule summary:
    input:
        expand(f"{RESULTS}/round-{{n}}/metrics.json", n=range(ROUNDS + 1)),
    output:
        report(f"{RESULTS}/summary.csv", caption="../report/summary.rst", category="Rounds",
               subcategory="Across rounds"),
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "{CVGL} summary --metrics {input} --out {output} 2> {log}"


rule plots:
    input:
        summary=rules.summary.output,
        labels=expand(f"{RESULTS}/round-{{n}}/labels.parquet", n=range(1, ROUNDS + 1)),
    output:
        rounds=report(f"{RESULTS}/plots/rounds.png", caption="../report/rounds.rst", category="Rounds",
                      subcategory="Across rounds"),
        # labels are strings (the report sorts them as text), zero-padded so round 10 sorts after round 9
        margins=[report(f"{RESULTS}/plots/round-{n}-margins.png", caption="../report/margins.rst", category="Rounds",
                        subcategory="Margins per round", labels={"round": str(n).zfill(len(str(ROUNDS)))})
                 for n in range(1, ROUNDS + 1)],
    log:
        f"{RESULTS}/logs/plots.log",
    benchmark:
        f"{RESULTS}/benchmarks/plots.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "{CVGL} plots --summary {input.summary} --labels {input.labels} --out {RESULTS}/plots 2> {log}"
