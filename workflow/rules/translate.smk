# Unpaired translation of projections into satellite appearance (docs/method.md §2.3).


rule translate:
    input:
        projected=rules.project.output,
        satellites=image_cache("train", "satellite"),
        satellite_ids=image_cache_ids("train", "satellite"),
    output:
        model=f"{RESULTS}/translator/model.pt",
        images=directory(f"{RESULTS}/translated"),
    params:
        method=config["translate"]["method"],
        options=as_json(cvgl_config.translate_options(config)),
    log:
        f"{RESULTS}/logs/translate.log",
    benchmark:
        f"{RESULTS}/benchmarks/translate.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus(1 if config["translate"]["method"] == "cyclegan" else 0),
    shell:
        "{CVGL} translate --projected {input.projected} --satellite-cache {input.satellites} "
        "--method {params.method} --options {params.options:q} --model-out {output.model} "
        "--out {output.images} --threads {threads} > {log} 2>&1"
