# cvgl: unsupervised cross-view geo-localization (UCVGL, CVPR 2024) as a Snakemake workflow.
# This file is a table of contents; the rules live in workflow/rules/, the work in `cvgl <stage>`.
from snakemake.utils import min_version

from cvgl.config import merge_configs, resolve_config, typed_overrides

min_version("9.0")


# config.yaml is the demo: it is the config only when no --configfile is given. A real-data run names its
# dataset's file (configs/cvusa.yaml, ...) and starts from the schema's defaults, which are the paper's.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


# Schema (one line per bad key path), defaults, the paper's per-dataset values and every cross-key rule, before
# any rule exists (cvgl.config). A job's own process (cluster executors) skips the checks that build a model:
# the process that submitted it ran them on the same config. `--config` values are typed by the schema first
# (Snakemake reads the scalars of a nested `--config key='{...}'` as strings) and win as they did.
SCHEMA = f"{workflow.basedir}/workflow/schemas/config.schema.yaml"
OVERRIDES = typed_overrides(workflow.config_settings.config, SCHEMA)
config.update(resolve_config(merge_configs(config, OVERRIDES), SCHEMA, workflow.configfiles,
                             f"{workflow.basedir}/config.yaml", check_builds=workflow.is_main_process))


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/project.smk"
include: "workflow/rules/translate.smk"
include: "workflow/rules/coldstart.smk"
include: "workflow/rules/rounds.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    input:
        f"{RESULTS}/summary.csv",
        rules.plots.output,
        rules.samples.output,
        rules.resolved_config.output,
        rules.summary_table.output,
        expand(f"{RESULTS}/report/round-{{n}}-{{kind}}.png", n=EVALUATED, kind=["retrievals", "errors"]),
    default_target: True


onsuccess:
    print_summary()
