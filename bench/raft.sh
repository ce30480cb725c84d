#!/usr/bin/env bash
# Raft write throughput: committed writes/s through the control API (UpdateService on the
# leader's API socket, from in-process gRPC clients) on 3 managers of the test harness's network
# namespaces, with 1, 10 and 100 concurrent clients; latency p50/p99 and the Raft log and
# snapshot sizes on each manager's disk. Every write is fsynced. Needs root (network namespaces,
# containerd). See tests/src/bin/bench-raft.rs.
#
#   bench/raft.sh [--clients 1,10,100] [--duration SECS | --writes N] [--quick]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-raft "$@"
