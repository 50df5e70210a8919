# Cross-view projection: every train panorama to a bird's-eye view (spherical transform, docs/method.md §2.2).


rule project:
    input:
        images=rules.manifest.output.images,
        dataset=dataset_inputs(),
    output:
        directory(f"{RESULTS}/projected"),
    params:
        cfg=as_json(config["project"]),
        root=dataset_root(),
    log:
        f"{RESULTS}/logs/project.log",
    benchmark:
        f"{RESULTS}/benchmarks/project.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "{CVGL} project --manifest {RESULTS}/manifest --root {params.root:q} --config {params.cfg:q} "
        "--out {output} --threads {threads} > {log} 2>&1"
