# Report items the rounds do not make: sample images of each stage, the resolved config, the summary as a table.
# `rule all` builds them, so `snakemake --report report.html` only collects them (with summary.csv and the plots);
# captions live in workflow/report/.

REPORT = f"{RESULTS}/report"


def sample_inputs(wildcards):
    """Projections and translations only where the cold start made them, so an ablation that skips those stages
    does not run them for a figure."""
    out = {"images": rules.manifest.output.images, "truth": rules.manifest.output.truth, "dataset": dataset_inputs()}
    fakes = cvgl_config.cold_start_fakes(config)
    if fakes:  # the cold start made projections (and translated them, unless translate.method is none)
        out["projected"] = f"{RESULTS}/projected"
        if fakes == "translated":
            out["translated"] = f"{RESULTS}/translated"
    return out


rule samples:
    input:
        unpack(sample_inputs),
    output:
        report(f"{REPORT}/samples.png", caption="../report/samples.rst", category="Stages"),
    params:
        root=dataset_root(),
        samples=4,
        seed=config["seed"],
        projected=lambda wc, input: f"--projected {input.projected}" if "projected" in input.keys() else "",
        translated=lambda wc, input: f"--translated {input.translated}" if "translated" in input.keys() else "",
    log:
        f"{RESULTS}/logs/samples.log",
    benchmark:
        f"{RESULTS}/benchmarks/samples.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "{CVGL} samples --manifest {RESULTS}/manifest --root {params.root:q} {params.projected} {params.translated} "
        "--count {params.samples} --seed {params.seed} --out {output} > {log} 2>&1"


rule retrieval_figures:
    input:
        retrievals=f"{RESULTS}/round-{{n}}/retrievals.parquet",
        images=rules.manifest.output.images,
        truth=rules.manifest.output.truth,
        ground=image_cache("test", "ground"),
        satellite=image_cache("test", "satellite"),
    output:
        retrievals=report(f"{REPORT}/round-{{n}}-retrievals.png", caption="../report/retrievals.rst",
                          category="Rounds", subcategory="Retrievals per round", labels={"round": "{n}"}),
        errors=report(f"{REPORT}/round-{{n}}-errors.png", caption="../report/errors.rst", category="Rounds",
                      subcategory="Top-1 errors per round", labels={"round": "{n}"}),
    params:
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/round-{{n}}/retrieval_figures.log",
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    shell:
        "{CVGL} retrieval-figures --retrievals {input.retrievals} --manifest {RESULTS}/manifest "
        "--ground-cache {input.ground} --satellite-cache {input.satellite} --count 4 --seed {params.seed} "
        "--out {output.retrievals} --map-out {output.errors} > {log} 2>&1"


rule resolved_config:
    output:
        report(f"{REPORT}/config.yaml", caption="../report/config.rst", category="Configuration"),
    params:
        cfg=as_json(config),
    log:
        f"{RESULTS}/logs/resolved_config.log",
    benchmark:
        f"{RESULTS}/benchmarks/resolved_config.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "{CVGL} resolved-config --config {params.cfg:q} --out {output} > {log} 2>&1"


rule summary_table:
    input:
        rules.summary.output,
    output:
        report(f"{REPORT}/summary.html", caption="../report/summary-table.rst", category="Rounds",
               subcategory="Across rounds"),
    log:
        f"{RESULTS}/logs/summary_table.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary_table.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shell:
        "{CVGL} summary-table --summary {input} --out {output} > {log} 2>&1"
