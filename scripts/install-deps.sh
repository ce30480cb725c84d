#!/usr/bin/env bash
# Installs what Shoal's build, tests and demo need from Debian's packages.
#
# Idempotent: when every package is already installed it does not touch apt at all, so it is
# cheap to run before every build. It never starts the host's containerd service: the tests and
# the demo run private containerd instances with their own sockets and state.
set -euo pipefail

PACKAGES=(
  containerd        # the container runtime Shoal drives over gRPC
  runc              # containerd's OCI runtime
  protobuf-compiler # protoc, for proto/build.rs
  iproute2          # ip netns, for multi-host tests
  nftables          # overlay / port publishing rules
  util-linux        # nsenter, to start test hosts inside a netns
  busybox-static    # the test image's only binary
  docker-registry   # a local registry for pull tests
  skopeo            # copies images into that registry
  apache2-utils     # htpasswd (bcrypt), for the registry's login in the private-registry tests
  openssl           # the private registry's self-signed TLS certificate in tests
  zstd              # zstd-compressed layers in the image tests
  jq                # scripts parse `shoal ... --format json`
  procps            # ps/pgrep used by scripts and the benchmark
  prometheus        # promtool and a real server for the metrics tests
  iperf3            # the overlay benchmark's throughput
  ethtool           # test hosts' NICs get GRO on, as real NICs have
  wrk               # the load balancing benchmark's HTTP load generator
  tini              # tini-static, the init `service create --init` runs as PID 1
  docker.io         # Docker Swarm, which the benchmarks compare against (never started as a service)
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  # "install ok installed" is the only status that means the package is really there; a
  # removed-but-not-purged package still has a status line.
  status=$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if ((${#missing[@]} == 0)); then
  exit 0
fi

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps: missing packages: ${missing[*]}; run this script as root" >&2
  exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d exit 101 keeps apt from starting services (containerd, docker-registry) on a
# machine with an init system: the tests never use the host's instances. Only added when no
# policy already exists, and removed again afterwards.
policy=/usr/sbin/policy-rc.d
added_policy=0
if [[ ! -e $policy ]]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  added_policy=1
fi
cleanup() { if ((added_policy)); then rm -f "$policy"; fi; }
trap cleanup EXIT

apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
