#!/usr/bin/env bash
# Measures service load balancing on the test harness's two network-namespace hosts: wrk's
# requests/s and p99 latency against a busybox httpd task reached directly, through its VIP and
# through the routing mesh from the node without a task, and the ratios to direct. Needs root.
# Addresses: 198.18.0.0/15 only. See tests/src/bin/bench-lb.rs.
#
#   bench/lb.sh [--seconds N] [--rounds N]     (defaults: 5 s, 5 rounds)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-lb "$@"
