#!/usr/bin/env bash
# Stop jobs started by submit.sh (ids as arguments): each is its own process group.
for jobid in "$@"; do
  kill -TERM -- "-$jobid" 2>/dev/null || true
done
