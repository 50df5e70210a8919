# Self-training rounds (docs/method.md §5, §10): round n labels the train split with the round n-1 model and
# trains on those pseudo pairs. Round numbers are a wildcard, so one round can be rerun on its own.


def fake_pairs_input(wildcards):
    """The cold start's fakes every round keeps (`rounds.keep_fake_pairs`, where the cold start had them)."""
    source = cvgl_config.keeps_fake_pairs(config)
    return [fakes_path(source)] if source else []


def prior_input(wildcards):
    """The projection prior's descriptors, read by every round's labelling where labels.prior_weight > 0."""
    return [f"{RESULTS}/prior"] if cvgl_config.uses_prior(config) else []


rule prior:
    input:
        projected=rules.project.output,
        satellites=image_cache("train", "satellite"),
        satellite_ids=image_cache_ids("train", "satellite"),
    output:
        directory(f"{RESULTS}/prior"),
    params:
        size=config["labels"]["prior_size"],
        radius=(f"--radius {config['model']['satellite_mask_radius']}"
                if config["model"]["satellite_mask_radius"] else ""),
    log:
        f"{RESULTS}/logs/prior.log",
    benchmark:
        f"{RESULTS}/benchmarks/prior.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{CVGL} prior --projected {input.projected} --satellite-cache {input.satellites} --size {params.size} "
        "{params.radius} --out {output} --threads {threads} > {log} 2>&1"


def features_input(wildcards):
    """A frozen backbone's stored features of the split, which every round's embedding pools instead of running
    the backbone (model.freeze: backbone with evaluate.cache_frozen_features)."""
    return [f"{RESULTS}/features/{wildcards.split}"] if cvgl_config.caches_frozen_features(config) else []


rule features:
    input:
        model=f"{RESULTS}/round-0/model.pt",
        ground=image_cache("{split}", "ground"),
        ground_ids=image_cache_ids("{split}", "ground"),
        satellite=image_cache("{split}", "satellite"),
        satellite_ids=image_cache_ids("{split}", "satellite"),
    output:
        directory(f"{RESULTS}/features/{{split}}"),
    params:
        batch=config["evaluate"]["batch_size"],
        device=config["device"],
        precision=config["precision"],
        symmetries=lambda wc: cvgl_config.embedding_symmetries(config, wc.split),
    log:
        f"{RESULTS}/logs/features-{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features-{{split}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus(),
    shell:
        "{CVGL} features --model {input.model} --ground-cache {input.ground} --satellite-cache {input.satellite} "
        "--out {output} --batch-size {params.batch} --device {params.device} --precision {params.precision} "
        "--symmetries {params.symmetries} --threads {threads} > {log} 2>&1"


rule embed:
    input:
        model=f"{RESULTS}/round-{{n}}/model.pt",
        ground=image_cache("{split}", "ground"),
        ground_ids=image_cache_ids("{split}", "ground"),
        satellite=image_cache("{split}", "satellite"),
        satellite_ids=image_cache_ids("{split}", "satellite"),
        features=features_input,
    output:
        directory(f"{RESULTS}/round-{{n}}/embeddings/{{split}}"),
    params:
        batch=config["evaluate"]["batch_size"],
        device=config["device"],
        precision=config["precision"],
        symmetries=lambda wc: cvgl_config.embedding_symmetries(config, wc.split),
        source=lambda wc, input: (f"--features {input.features}" if input.features else
                                  f"--ground-cache {input.ground} --satellite-cache {input.satellite}"),
    log:
        f"{RESULTS}/logs/round-{{n}}/embed-{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/embed-{{split}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=60,
        gpu=gpus(),
    shell:
        "{CVGL} embed --model {input.model} {params.source} "
        "--out {output} --batch-size {params.batch} --device {params.device} --precision {params.precision} "
        "--symmetries {params.symmetries} --threads {threads} > {log} 2>&1"


rule index:
    input:
        f"{RESULTS}/round-{{n}}/embeddings/{{split}}",
    output:
        index=f"{RESULTS}/round-{{n}}/index/{{split}}-satellite.faiss",
        ids=f"{RESULTS}/round-{{n}}/index/{{split}}-satellite.faiss.ids.parquet",
    params:
        factory=config["labels"]["index"],
    log:
        f"{RESULTS}/logs/round-{{n}}/index-{{split}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/index-{{split}}.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "{CVGL} index --embeddings {input} --factory {params.factory:q} --out {output.index} "
        "--threads {threads} > {log} 2>&1"


def approximate_index(wildcards):
    """The satellite index an approximate `labels.index` searches; exact matching (Flat) reads none, so no
    index job runs for it."""
    if not cvgl_config.approximate_labels(config):
        return {}
    path = f"{RESULTS}/round-{previous_round(wildcards)}/index/train-satellite.faiss"
    return {"index": path, "index_ids": f"{path}.ids.parquet"}


rule pseudo_label:
    input:
        unpack(approximate_index),
        embeddings=lambda wc: f"{RESULTS}/round-{previous_round(wc)}/embeddings/train",
        labeled=rules.manifest.output.labeled,
        prior=prior_input,
    output:
        f"{RESULTS}/round-{{n}}/matches.parquet",
    wildcard_constraints:
        n=r"[1-9]\d*",
    params:
        cfg=lambda wc: as_json(cvgl_config.pseudo_label_slice(config, wc.n)),
        prior=lambda wc, input: f"--prior {input.prior}" if input.prior else "",
        index=lambda wc, input: f"--index {input.index}" if "index" in input.keys() else "",
        device=config["device"],
    log:
        f"{RESULTS}/logs/round-{{n}}/pseudo_label.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/pseudo_label.tsv"
    threads: THREADS
    resources:
        mem_mb=4000,
        runtime=30,
        gpu=gpus(),
    shell:
        "{CVGL} pseudo-label --embeddings {input.embeddings} {params.index} --labeled {input.labeled} "
        "--round {wildcards.n} --config {params.cfg:q} {params.prior} --device {params.device} --out {output} "
        "--threads {threads} > {log} 2>&1"


rule diagnose_labels:
    input:
        matches=rules.pseudo_label.output,
        truth=rules.manifest.output.truth,
    output:
        f"{RESULTS}/round-{{n}}/labels.parquet",
    log:
        f"{RESULTS}/logs/round-{{n}}/diagnose_labels.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/diagnose_labels.tsv"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "{CVGL} diagnose --matches {input.matches} --manifest {RESULTS}/manifest --out {output} > {log} 2>&1"


rule train_round:
    input:
        init=lambda wc: f"{RESULTS}/round-{previous_round(wc)}/model.pt",
        labels=rules.pseudo_label.output,
        ground=image_cache("train", "ground"),
        ground_ids=image_cache_ids("train", "ground"),
        satellite=image_cache("train", "satellite"),
        satellite_ids=image_cache_ids("train", "satellite"),
        fakes=fake_pairs_input,
        weights=model_weights(),
    output:
        f"{RESULTS}/round-{{n}}/model.pt",
    wildcard_constraints:
        n=r"[1-9]\d*",
    params:
        cfg=lambda wc: as_json(cvgl_config.round_slice(config, wc.n)),
        translated=fakes_argument,  # --translated DIR, or --projected DIR with translate.method: none
    log:
        f"{RESULTS}/logs/round-{{n}}/train_round.log",
    benchmark:
        f"{RESULTS}/benchmarks/round-{{n}}/train_round.tsv"
    threads: THREADS
    resources:
        mem_mb=8000,
        runtime=240,
        gpu=gpus(PROCESSES),
    shell:
        "{CVGL_TRAIN} train-round --config {params.cfg:q} --init {input.init} --labels {input.labels} "
        "--ground-cache {input.ground} --satellite-cache {input.satellite} --round {wildcards.n} "
        "{params.translated} --out {output} --threads {threads} {LOADER} > {log} 2>&1"
