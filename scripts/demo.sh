#!/usr/bin/env bash
# Runs Shoal on this machine: a private containerd, a `shoal daemon`, a one-node swarm, an
# overlay network, a three-replica web service on it publishing port 8080 through the routing
# mesh, a second service whose task reaches the web service by name through Shoal's DNS and
# VIP, and requests from this host to the published port.
#
#   scripts/demo.sh          start everything (again) and show the service
#   scripts/demo.sh stop     remove the service, stop the daemon and containerd, unmount
#   scripts/demo.sh clean    stop, then delete all demo state (images, swarm, logs)
#
# The demo's containerd has its own root, state and socket (/var/lib/shoal-demo,
# /run/shoal-demo), so it never touches the host's containerd or /var/lib/shoal. Every address it
# makes is inside 198.18.0.0/15 (set aside for benchmarks): the outbound bridge 198.19.255.1/24,
# network subnets from 198.18.128.0/17.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=/var/lib/shoal-demo
RUN=/run/shoal-demo
CONTAINERD_SOCK=$RUN/containerd.sock
SHOAL_SOCK=$RUN/shoal.sock
NAMESPACE=shoal
SHOAL=$ROOT/target/release/shoal
BUILD_IMAGE=$ROOT/target/release/build-test-image
export SHOAL_HOST=unix://$SHOAL_SOCK
BRIDGE=shoal_demo0
BIP=198.19.255.1/24
NETWORK=demo-net

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
die() {
  printf 'demo: %s\n' "$*" >&2
  exit 1
}

if [[ $(id -u) -ne 0 ]]; then
  die "run as root: containerd and runc need it"
fi

# A non-login shell may not have rustup's directory on PATH.
if ! command -v cargo >/dev/null 2>&1 && [[ -x "$HOME/.cargo/bin/cargo" ]]; then
  export PATH="$HOME/.cargo/bin:$PATH"
fi

ctr_() { ctr --address "$CONTAINERD_SOCK" -n "$NAMESPACE" "$@"; }

# Is the process in pid file $1 alive?
alive() { [[ -f $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Sends SIGTERM to the process in pid file $1, waits up to $2 seconds, then SIGKILL.
stop_pid() {
  local pidfile=$1 grace=$2 pid
  alive "$pidfile" || {
    rm -f "$pidfile"
    return 0
  }
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < grace * 10; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$pidfile"
}

start_containerd() {
  mkdir -p "$STATE/containerd" "$RUN/containerd" "$STATE/logs"
  if alive "$RUN/containerd.pid"; then
    return 0
  fi
  # Everything containerd writes goes under the demo's own directories. The CRI plugin is off:
  # Shoal talks to containerd's own API and CRI would only add start-up work.
  cat >"$RUN/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.grpc.v1.cri"]

[grpc]
  address = "$CONTAINERD_SOCK"

[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
EOF
  log "starting containerd on $CONTAINERD_SOCK (log: $STATE/logs/containerd.log)"
  nohup containerd --config "$RUN/containerd.toml" >>"$STATE/logs/containerd.log" 2>&1 &
  echo $! >"$RUN/containerd.pid"
  for ((i = 0; i < 100; i++)); do
    if ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1; then
      return 0
    fi
    alive "$RUN/containerd.pid" || break
    sleep 0.2
  done
  tail -n 30 "$STATE/logs/containerd.log" >&2 || true
  die "containerd did not come up; see $STATE/logs/containerd.log"
}

start_daemon() {
  if alive "$RUN/shoal.pid"; then
    return 0
  fi
  log "starting shoal daemon on $SHOAL_SOCK (log: $STATE/logs/shoal.log)"
  nohup "$SHOAL" -H "$SHOAL_HOST" daemon \
    --data-dir "$STATE/shoal" \
    --containerd "$CONTAINERD_SOCK" \
    --containerd-namespace "$NAMESPACE" \
    --bridge "$BRIDGE" --bip "$BIP" >>"$STATE/logs/shoal.log" 2>&1 &
  echo $! >"$RUN/shoal.pid"
  for ((i = 0; i < 150; i++)); do
    if "$SHOAL" info >/dev/null 2>&1; then
      return 0
    fi
    alive "$RUN/shoal.pid" || break
    sleep 0.2
  done
  tail -n 30 "$STATE/logs/shoal.log" >&2 || true
  die "shoal daemon did not come up; see $STATE/logs/shoal.log"
}

# Kills and deletes every task and container in the demo namespace. containerd leaves shims
# and containers running when it exits, so this has to happen while it still runs.
clean_containerd_tasks() {
  ctr --address "$CONTAINERD_SOCK" version >/dev/null 2>&1 || return 0
  local id
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    ctr_ tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true
  done
  for id in $(ctr_ tasks ls -q 2>/dev/null); do
    for ((i = 0; i < 50; i++)); do
      ctr_ tasks delete "$id" >/dev/null 2>&1 && break
      sleep 0.1
    done
  done
  for id in $(ctr_ containers ls -q 2>/dev/null); do
    ctr_ containers delete "$id" >/dev/null 2>&1 || true
  done
}

# Unmounts whatever is still mounted under the demo's directories, deepest first.
unmount_leftovers() {
  local target
  # grep finding nothing is fine (and must not trip `set -o pipefail`).
  findmnt -rn -o TARGET | { grep -E "^($STATE|$RUN)(/|$)" || true; } | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
  done
}

stop_all() {
  if alive "$RUN/shoal.pid"; then
    log "removing services web and client, and network $NETWORK"
    "$SHOAL" service rm web client >/dev/null 2>&1 || true
    # The tasks' namespaces go once their containers have stopped.
    for ((i = 0; i < 100; i++)); do
      "$SHOAL" network rm "$NETWORK" >/dev/null 2>&1 && break
      "$SHOAL" network inspect "$NETWORK" >/dev/null 2>&1 || break
      sleep 0.2
    done
  fi
  log "stopping shoal daemon"
  stop_pid "$RUN/shoal.pid" 15
  log "removing containerd tasks and containers"
  clean_containerd_tasks
  log "stopping containerd"
  stop_pid "$RUN/containerd.pid" 15
  # Shims of this containerd (they name its socket on their command line) outlive it when a
  # task could not be deleted; they are ours, found by our own socket path only.
  local pid
  for pid in $(pgrep -f -- "-address $CONTAINERD_SOCK" || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  unmount_leftovers
  # The daemon keeps its outbound bridge and masquerading table while it runs (as dockerd keeps
  # docker_gwbridge); the demo removes both when it stops.
  ip link delete "$BRIDGE" 2>/dev/null || true
  nft delete table ip "shoal_$BRIDGE" 2>/dev/null || true
  rm -rf "$RUN"
}

case "${1:-start}" in
  stop)
    stop_all
    echo "Stopped. State kept in $STATE; 'scripts/demo.sh clean' removes it."
    exit 0
    ;;
  clean)
    stop_all
    rm -rf "$STATE"
    echo "Stopped and removed $STATE."
    exit 0
    ;;
  start) ;;
  *) die "usage: scripts/demo.sh [start|stop|clean]" ;;
esac

log "installing dependencies"
"$ROOT/scripts/install-deps.sh"
log "building (release)"
(cd "$ROOT" && cargo build --release --bin shoal --bin build-test-image)

mkdir -p "$RUN" "$STATE"
start_containerd
start_daemon

log "shoal swarm init"
# Loopback only: a one-node demo swarm has no one to talk to, so it opens no port to the network.
# Network subnets come from 198.18.128.0/17 (set aside for benchmarks), never a range in use.
if ! out=$("$SHOAL" swarm init --listen-addr 127.0.0.1:2377 --default-addr-pool 198.18.128.0/17 2>&1); then
  # A node kept from an earlier run is already a manager: that is fine for the demo.
  grep -q "already part of a swarm" <<<"$out" || die "$out"
  echo "(already in a swarm from an earlier run)"
else
  echo "$out"
fi

log "building and loading the busybox test image"
"$BUILD_IMAGE" "$STATE/busybox.tar"
"$SHOAL" image load -i "$STATE/busybox.tar"

if "$SHOAL" network inspect "$NETWORK" >/dev/null 2>&1; then
  log "network $NETWORK exists already"
else
  log "shoal network create --driver overlay $NETWORK"
  "$SHOAL" network create --driver overlay "$NETWORK"
fi

if "$SHOAL" service inspect web >/dev/null 2>&1; then
  log "service web exists already"
else
  log "shoal service create --name web --network $NETWORK --publish 8080:80 --replicas 3 busybox sh -c '…httpd…'"
  # Each replica serves a page with its own hostname, so the answers show who replied.
  # shellcheck disable=SC2016 # $(hostname) is for the container's shell, not this one
  "$SHOAL" service create --name web --network "$NETWORK" --publish 8080:80 --replicas 3 busybox \
    sh -c 'mkdir -p /www && echo "hello from $(hostname)" >/www/index.html && httpd -f -p 80 -h /www'
fi
if ! "$SHOAL" service ls | grep -q '8080->80'; then
  log "shoal service update --publish-add 8080:80 web   (web from an earlier demo)"
  "$SHOAL" service update --publish-add 8080:80 web
fi

if "$SHOAL" service inspect client >/dev/null 2>&1; then
  log "service client exists already"
else
  log "shoal service create --name client --network $NETWORK busybox sleep 1d"
  "$SHOAL" service create --name client --network "$NETWORK" busybox sleep 86400
fi

# The client's running task (its container ID is the task ID).
client_task() {
  local id
  for id in $("$SHOAL" service ps -q --no-trunc client); do
    if ctr_ tasks ls 2>/dev/null | grep -q "^$id .*RUNNING"; then
      echo "$id"
      return 0
    fi
  done
  return 1
}

log "the client task asks for http://web/ three times (by name: Shoal's DNS answers the VIP)"
task=""
for ((i = 0; i < 100; i++)); do
  task=$(client_task) && break
  sleep 0.2
done
[[ -n $task ]] || die "the client task did not start; see $STATE/logs/shoal.log"
ctr_ tasks exec --exec-id "demo-$$" "$task" nslookup tasks.web || true
for n in 1 2 3; do
  ctr_ tasks exec --exec-id "demo-$$-$n" "$task" timeout 10 wget -q -O - http://web/ ||
    die "the client could not reach web by name"
done

log "this host asks for http://127.0.0.1:8080/ three times (the routing mesh's published port)"
for n in 1 2 3; do
  ok=""
  for ((i = 0; i < 50; i++)); do
    if busybox wget -q -O - http://127.0.0.1:8080/ 2>/dev/null; then
      ok=1
      break
    fi
    sleep 0.2
  done
  [[ -n $ok ]] || die "the published port 8080 did not answer; see $STATE/logs/shoal.log"
done

log "shoal service ls"
"$SHOAL" service ls
log "shoal service ps web"
"$SHOAL" service ps web

cat <<EOF

Shoal is running. To use it from this shell:

  export SHOAL_HOST=$SHOAL_HOST
  $SHOAL service ls
  $SHOAL network inspect $NETWORK
  $SHOAL service logs web
  $SHOAL service scale web=5
  busybox wget -q -O - http://127.0.0.1:8080/     # any address of this host works
  $SHOAL node ls

Logs: $STATE/logs/shoal.log (daemon), $STATE/logs/containerd.log
Stop: scripts/demo.sh stop      (remove everything: scripts/demo.sh clean)
EOF
