#!/usr/bin/env bash
# Builds everything and runs every test, unit and integration, against real containerd.
#
# The integration tests start their own private containerd instances (own root, state and
# socket under a temp dir) and `shoal daemon` processes, so nothing on the host is touched
# beyond the shared runc state directory, where every container ID is random.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# A non-login CI shell may not have rustup's directory on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

"$ROOT/scripts/install-deps.sh"

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}

# The free disk space, before and after the build: when a build or a test runs out of disk,
# the log says so instead of leaving only a linker's SIGBUS or an ENOSPC deep in a test.
df -h "$ROOT" | tail -n 1 | awk '{print "disk before the build: " $4 " free of " $2}'

# Builds the `shoal` binary the integration tests run (they look for it next to their own
# executable, in target/debug) along with every test target.
cargo build --workspace --all-targets
df -h "$ROOT" | tail -n 1 | awk '{print "disk after the build: " $4 " free of " $2}'

# --no-fail-fast: one failing test binary should not hide the results of the others.
# Two threads: the machine has two cores, and each integration test runs containerd, a daemon
# and real containers; more threads only make timing-sensitive waits slower.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
rm -f "$ROOT/target/tmp/fault-injection-summary.txt"
cargo test --workspace --no-fail-fast -- --test-threads="${SHOAL_TEST_THREADS:-2}" 2>&1 | tee "$log" || status=$?

# cargo ends on the doc-test binaries, most of which hold no test: close with the totals.
awk '/^test result:/ {
       for (i = 2; i <= NF; i++) {
         if ($i ~ /^passed;/) passed += $(i - 1)
         if ($i ~ /^failed;/) failed += $(i - 1)
       }
     }
     END { printf "total: %d passed, %d failed\n", passed, failed }' "$log"
# The fault-injection suite's counts (its output is captured when it passes).
summary="$ROOT/target/tmp/fault-injection-summary.txt"
if [[ -f "$summary" ]]; then
  cat "$summary"
  rm -f "$summary"
fi
exit "$status"
