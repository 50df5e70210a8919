# Cold start (method.md §4): intra-view self-supervision, then (panorama, translated projection) pairs.


rule intra_view:
    input:
        ground=f"{RESULTS}/cache/train-ground.npy",
        satellite=f"{RESULTS}/cache/train-satellite.npy",
    output:
        f"{RESULTS}/coldstart/intra.pt",
    params:
        cfg=train_config(config["coldstart"]["intra"]),
    log:
        f"{RESULTS}/logs/intra_view.log",
    benchmark:
        f"{RESULTS}/benchmarks/intra_view.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "{CVGL} intra-view --config {params.cfg:q} --ground-cache {input.ground} "
        "--satellite-cache {input.satellite} --out {output} > {log} 2>&1"


rule cross_view:
    input:
        init=rules.intra_view.output,
        ground=f"{RESULTS}/cache/train-ground.npy",
        translated=rules.translate.output.images,
    output:
        f"{RESULTS}/round-0/model.pt",
    params:
        cfg=train_config(config["coldstart"]["cross"], schedule_offset=config["coldstart"]["intra"]["epochs"]),
    log:
        f"{RESULTS}/logs/cross_view.log",
    benchmark:
        f"{RESULTS}/benchmarks/cross_view.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=120,
    shell:
        "{CVGL} cross-view --config {params.cfg:q} --init {input.init} --ground-cache {input.ground} "
        "--translated {input.translated} --out {output} > {log} 2>&1"
