# Evaluation of the rounds on the test split (every round unless evaluate.every), and the run's summary table.
import shlex


def round_labels(wildcards):
    return [] if int(wildcards.n) == 0 else [f"{RESULTS}/round-{wildcards.n}/labels.parquet"]


rule evaluate:
    input:
        embeddings=f"{RESULTS}/round-{{n}}/embeddings/test",
        truth=rules.manifest.output.truth,
        model=f"{RESULTS}/round-{{n}}/model.pt",
        labels=round_labels,
    output:
        metrics=f"{RESULTS}/round-{{n}}/metrics.json",
        retrievals=f"{RESULTS}/round-{{n}}/retrievals.parquet",
    params:
        labels=lambda wc, input: f"--labels {input.labels}" if input.labels else "",
        top_k=config["evaluate"]["top_k"],
        radii=" ".join(str(r) for r in config["evaluate"]["radii_m"]),
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
        "--model {input.model} {params.labels} --top-k {params.top_k} --radii {params.radii} "
        "--out {output.metrics} > {log} 2>&1"


rule summary:
    input:
        expand(f"{RESULTS}/round-{{n}}/metrics.json", n=EVALUATED),
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


def localize_job(wildcards):
    """The `localize.<name>` entry of the config, its defaults filled (a clear error when the config has none)."""
    try:
        return cvgl_config.localize_job(config, wildcards.name)
    except KeyError as err:
        raise WorkflowError(err.args[0]) from None


def localize_model(wildcards):
    n = localize_job(wildcards)["round"]
    return f"{RESULTS}/round-{ROUNDS if n is None else n}/model.pt"


def localize_queries(wildcards):
    q = localize_job(wildcards)["queries"]
    return " ".join(shlex.quote(str(x)) for x in ([q] if isinstance(q, str) else q))


rule localize:
    """The top-K gallery tiles of each query with a round's model; the gallery's embeddings and index are
    cached under the target's folder and reused while the model and the gallery are unchanged."""
    input:
        model=localize_model,
    output:
        retrievals=f"{RESULTS}/localize/{{name}}/retrievals.parquet",
        csv=f"{RESULTS}/localize/{{name}}/retrievals.csv",
        skipped=f"{RESULTS}/localize/{{name}}/skipped.csv",
    params:
        job=localize_job,
        queries=localize_queries,
        search=lambda wc: f"--search {shlex.quote(s)}" if (s := localize_job(wc)["search"]) else "",
        device=config["device"],
    log:
        f"{RESULTS}/logs/localize-{{name}}.log",
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=60,
        gpu=gpus(),
    shell:
        "{CVGL} localize --model {input.model} --gallery {params.job[gallery]:q} --queries {params.queries} "
        "--gallery-split {params.job[gallery_split]} --query-split {params.job[query_split]} "
        "--top-k {params.job[top_k]} --index {params.job[index]:q} {params.search} "
        "--out {RESULTS}/localize/{wildcards.name} --device {params.device} --threads {threads} > {log} 2>&1"
