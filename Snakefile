# cvgl: unsupervised cross-view geo-localization (UCVGL, CVPR 2024) as a Snakemake workflow.
# This file is a table of contents; the rules live in workflow/rules/, the work in `cvgl <stage>`.
from snakemake.utils import min_version, validate

from cvgl.config import check_config
from cvgl.defaults import with_paper_defaults

min_version("9.0")


configfile: "config.yaml"


check_config(config, f"{workflow.basedir}/workflow/schemas/config.schema.yaml")  # one line per bad key path
validate(config, schema="workflow/schemas/config.schema.yaml", set_default=True)
config.update(with_paper_defaults(config))  # null t0 / fov_deg / band: the paper's value for the dataset


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
    default_target: True


onsuccess:
    print_summary()
