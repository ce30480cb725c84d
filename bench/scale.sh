#!/usr/bin/env bash
# The control plane at scale: 3 managers and N hollow nodes (the real agent over real mutual
# TLS, starting no container; default 1,000), S services × R replicas (default 100 × 1,000 =
# 100,000 tasks). Prints the join time, the time until every task is assigned and RUNNING,
# `service ls`/`service ps` latency during the ramp, and the leader's RSS and CPU seconds.
# See tests/src/bin/bench-scale.rs.
#
#   bench/scale.sh [--nodes N] [--services S] [--replicas R] [--quick]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# The hollow nodes' binary, which the benchmark starts from beside itself.
bench_build hollow-nodes
run_bench bench-scale "$@"
