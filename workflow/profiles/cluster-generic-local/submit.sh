#!/usr/bin/env bash
# A stand-in for sbatch: start one Snakemake jobscript as a detached process group and print its job id (the pid).
# The job's output goes to .snakemake/cluster-generic-local/<id>.out and its exit code to <id>.exit (in the
# workflow's working directory, the directory Snakemake calls this from), which status.sh reads.
set -euo pipefail
jobscript="$1"
spool=".snakemake/cluster-generic-local"
mkdir -p "$spool"
# setsid keeps the job alive and cancellable as one group; `$$` in the job's shell is the pid printed below
# (setsid execs in place: a background child of this script is no process group leader, so it does not fork).
setsid bash -c 'bash "$1" > "$2/$$.out" 2>&1; echo $? > "$2/$$.exit.tmp"; mv "$2/$$.exit.tmp" "$2/$$.exit"' \
    job "$jobscript" "$spool" < /dev/null > /dev/null 2>&1 &
echo "$!"
