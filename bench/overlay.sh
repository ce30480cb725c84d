#!/usr/bin/env bash
# Measures the overlay network against the underlay on the test harness's two network-namespace
# hosts: iperf3 TCP throughput and ping round trips between two tasks on different hosts, the
# same between the hosts' own addresses, their ratios, and the time from `service create` to
# the new service's name resolving on the other host. Needs root. Addresses: 198.18.0.0/15 only.
# See tests/src/bin/bench-overlay.rs.
#
#   bench/overlay.sh [--seconds N]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
run_bench bench-overlay "$@"
