#!/usr/bin/env bash
# Print running, success or failed for a job id from submit.sh (what cluster-generic's status command must say).
set -uo pipefail
jobid="$1"
exit_file=".snakemake/cluster-generic-local/$jobid.exit"
verdict() { [[ "$(cat "$exit_file")" == 0 ]] && echo success || echo failed; }
if [[ -f "$exit_file" ]]; then
  verdict
elif kill -0 "$jobid" 2>/dev/null; then
  echo running
elif [[ -f "$exit_file" ]]; then  # it finished between the two checks
  verdict
else
  echo failed                    # gone without an exit code: killed (e.g. SIGKILL, out of memory)
fi
