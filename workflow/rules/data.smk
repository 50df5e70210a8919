# Data: the synthetic world (when no dataset is on disk), manifests and the decoded-image caches.


rule synth_world:
    output:
        directory(f"{RESULTS}/dataset"),
    params:
        cfg=as_json(config["synth"]),
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/synth_world.log",
    benchmark:
        f"{RESULTS}/benchmarks/synth_world.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{CVGL} synth --config {params.cfg:q} --seed {params.seed} --out {output} --threads {threads} > {log} 2>&1"


rule manifest:
    input:
        dataset_inputs(),
    output:
        images=f"{RESULTS}/manifest/images.parquet",
        truth=f"{RESULTS}/manifest/truth.parquet",
        labeled=f"{RESULTS}/manifest/labeled.parquet",
        skipped=f"{RESULTS}/manifest/skipped.csv",
    params:
        cfg=as_json(cvgl_config.manifest_slice(config)),
        root=dataset_root(),
        gt_ratio=config["rounds"]["gt_ratio"],
        seed=config["seed"],
    log:
        f"{RESULTS}/logs/manifest.log",
    benchmark:
        f"{RESULTS}/benchmarks/manifest.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{CVGL} manifest --config {params.cfg:q} --root {params.root:q} --gt-ratio {params.gt_ratio} "
        "--seed {params.seed} --out {RESULTS}/manifest > {log} 2>&1"


rule cache_images:
    input:
        images=rules.manifest.output.images,
        dataset=dataset_inputs(),
    output:
        pixels=image_cache("{split}", "{view}"),
        ids=image_cache_ids("{split}", "{view}"),
    params:
        root=dataset_root(),
        size=lambda wc: " ".join(map(str, image_size(wc.view))),
    log:
        f"{RESULTS}/logs/cache_images/{{split}}-{{view}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/cache_images/{{split}}-{{view}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{CVGL} cache --manifest {RESULTS}/manifest --root {params.root:q} --view {wildcards.view} "
        "--split {wildcards.split} --size {params.size} --out {output.pixels} --threads {threads} > {log} 2>&1"
