#!/usr/bin/env bash
# The benchmark suite: every part of it in one run, each printing a table of the figures it
# measured and their ratios (see docs/BENCHMARKS.md for what they mean).
#
#   bench/run.sh           full runs, release build (takes a while: see docs/BENCHMARKS.md)
#   bench/run.sh --quick   a small run of every part on the debug build: a smoke test that CI
#                          runs after the tests; its figures mean nothing, nothing is asserted
#                          about speed
#
# Parts: start latency against the floor and Docker Swarm (service_create), the control plane at
# scale with hollow nodes (scale), Raft write throughput (raft), memory footprint against
# dockerd (footprint).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
args=()
case "${1:-}" in
  --quick)
    args=(--quick)
    export BENCH_PROFILE=debug
    ;;
  "") ;;
  *)
    echo "usage: bench/run.sh [--quick]" >&2
    exit 2
    ;;
esac

parts=(service_create scale raft footprint)
failed=()
for part in "${parts[@]}"; do
  echo
  echo "=== bench/$part.sh ${args[*]:-}"
  start=$SECONDS
  if ! "$ROOT/bench/$part.sh" "${args[@]}"; then
    failed+=("$part")
  fi
  echo "=== $part: $((SECONDS - start)) s"
done

if ((${#failed[@]})); then
  echo "bench/run.sh: failed: ${failed[*]}" >&2
  exit 1
fi
