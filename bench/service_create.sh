#!/usr/bin/env bash
# Times `shoal service create --replicas 30` until 30/30 run, against starting the same 30
# containers directly through containerd's API, on one private containerd; prints both times,
# their ratio and the daemon's memory. See tests/src/bin/bench-service-create.rs.
#
#   bench/service_create.sh [--replicas N]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

scripts/install-deps.sh
# Release builds: the daemon's speed is what is measured. The benchmark finds `shoal` next to
# itself in target/release.
cargo build --release -p shoal-cli -p shoal-tests --bin shoal --bin bench-service-create
exec target/release/bench-service-create "$@"
