# Cold start (docs/method.md §4): intra-view self-supervision, then (panorama, translated projection) pairs.


rule intra_view:
    input:
        ground=image_cache("train", "ground"),
        ground_ids=image_cache_ids("train", "ground"),
        satellite=image_cache("train", "satellite"),
        satellite_ids=image_cache_ids("train", "satellite"),
        weights=model_weights(),
    output:
        f"{RESULTS}/coldstart/intra.pt",
    params:
        cfg=as_json(cvgl_config.intra_view_slice(config)),
    log:
        f"{RESULTS}/logs/intra_view.log",
    benchmark:
        f"{RESULTS}/benchmarks/intra_view.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpus(PROCESSES),
    shell:
        "{CVGL_TRAIN} intra-view --config {params.cfg:q} --ground-cache {input.ground} "
        "--satellite-cache {input.satellite} --out {output} --threads {threads} {LOADER} > {log} 2>&1"


rule cross_view:
    input:
        unpack(cross_view_inputs),
    output:
        f"{RESULTS}/round-0/model.pt",
    params:
        cfg=as_json(cvgl_config.cross_view_slice(config)),
        init=lambda wc, input: f"--init {input.init}" if "init" in input.keys() else "",
        translated=fakes_argument,  # --translated DIR, or --projected DIR with translate.method: none
    log:
        f"{RESULTS}/logs/cross_view.log",
    benchmark:
        f"{RESULTS}/benchmarks/cross_view.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
        gpu=gpus(PROCESSES),
    shell:
        "{CVGL_TRAIN} cross-view --config {params.cfg:q} {params.init} --ground-cache {input.ground} "
        "{params.translated} --out {output} --threads {threads} {LOADER} > {log} 2>&1"
