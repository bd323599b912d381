#!/usr/bin/env bash
# Builds the container image from contrib/container/Containerfile around a ringvault binary,
# starts compose.yaml's 3-node ring with podman-compose, and checks that it works: the three
# nodes find each other, an object put through node1 reads back identical through node3, and
# after `down` and `up` on the same volumes every node keeps its id and the object its bytes.
# Everything it starts is removed at the end, also on failure.
#
#   contrib/container/check.sh [BINARY]      (default: target/release/ringvault)
#
# Needs podman (and runc), podman-compose, curl, python3 and strip; under CI=true it installs
# the first three (Debian, PyPI), and elsewhere it skips with a message when they are missing. This check has no registry access, so unless RINGVAULT_BASE names a base image it
# builds one from this host's own C runtime (glibc, libm, libgcc_s and the loader: what the
# default base, distroless/cc, provides). Containers run with the runc runtime and with
# file and process limits no higher than this host's: machines with cgroup v1 or v2 hybrid
# mounts, where podman's defaults (crun) cannot start a container.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
bin=${1:-$root/target/release/ringvault}
[ -x "$bin" ] || { echo "error: no ringvault binary at $bin (cargo build --release)" >&2; exit 1; }

if [ "${CI:-}" = true ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  if ! command -v podman >/dev/null || ! command -v runc >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq && $sudo apt-get install -y -qq podman runc curl >/dev/null
  fi
  command -v podman-compose >/dev/null || pip install -q podman-compose==1.0.6 \
    || pip install -q --break-system-packages podman-compose==1.0.6
fi
for tool in podman runc podman-compose curl python3 strip; do
  if ! command -v "$tool" >/dev/null; then
    if [ "${CI:-}" = true ]; then
      echo "error: $tool is not installed" >&2
      exit 1
    fi
    echo "container check skipped: $tool is not installed (under CI=true this fails)"
    exit 0
  fi
done

work=$(mktemp -d)
tag="$$-$RANDOM"
project="ringvault-check-$tag"
image="localhost/ringvault-check:$tag"
base_image=""
export CONTAINERS_CONF="$work/containers.conf"
cat >"$CONTAINERS_CONF" <<EOF
[containers]
default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
compose() { RINGVAULT_IMAGE="$image" podman-compose -p "$project" -f "$here/compose.yaml" "$@"; }
cleanup() {
  compose down -v >/dev/null 2>&1 || true
  podman network rm -f "${project}_default" >/dev/null 2>&1 || true
  podman rmi -f "$image" ${base_image:+"$base_image"} >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The build context: the Containerfile, the empty data directory, the binary (stripped).
ctx="$work/context"
mkdir -p "$ctx"
cp "$here/Containerfile" "$ctx/"
cp -r "$here/data" "$ctx/"
strip -o "$ctx/ringvault" "$bin"
base=${RINGVAULT_BASE:-}
if [ -z "$base" ]; then
  rootfs="$work/base"
  mkdir -p "$rootfs/tmp"
  chmod 1777 "$rootfs/tmp"
  if ldd "$ctx/ringvault" | grep -q 'not found'; then
    echo "error: the binary needs libraries this host lacks:" >&2
    ldd "$ctx/ringvault" >&2
    exit 1
  fi
  for lib in $(ldd "$ctx/ringvault" | grep -oE '/[^ ]+'); do
    mkdir -p "$rootfs$(dirname "$lib")"
    cp -L "$lib" "$rootfs$lib"
  done
  printf 'FROM scratch\nCOPY . /\n' >"$work/Containerfile.base"
  base_image="localhost/ringvault-check-base:$tag"
  podman build -q -t "$base_image" -f "$work/Containerfile.base" "$rootfs" >/dev/null
  base=$base_image
fi
podman build -q -t "$image" --build-arg "BASE=$base" "$ctx" >/dev/null
echo "image built on $base"

# Waits up to $1 seconds for `$2` to succeed.
wait_for() {
  local deadline=$((SECONDS + $1)); shift
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then return 1; fi
    sleep 0.5
  done
}
# Three free loopback ports for the nodes' APIs: nothing else may answer where the check looks.
read -r p1 p2 p3 < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(3)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
export RINGVAULT_HTTP1=$p1 RINGVAULT_HTTP2=$p2 RINGVAULT_HTTP3=$p3
ports="$p1 $p2 $p3"
status() { curl -sf --max-time 5 "http://127.0.0.1:$1/v1/status"; }
leaf_size() {
  status "$1" | python3 -c 'import json,sys; s=json.load(sys.stdin)
print(len({c["id"] for k in ("leaf_set_smaller","leaf_set_larger") for c in s[k]}))'
}
ring_whole() { for p in $ports; do [ "$(leaf_size "$p")" = 2 ] || return 1; done; }
ids() { for p in $ports; do status "$p" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])'; done; }
fail() {
  echo "error: $*" >&2
  cat "$work/compose.log" >&2 2>/dev/null || true
  compose logs 2>&1 | tail -60 >&2
  exit 1
}
# podman-compose 1.0.6 does not report a failed `podman run` in its exit status: count the
# project's running containers instead.
running() { podman ps -q --filter "label=io.podman.compose.project=$project" | sort; }
up() {
  compose up -d --no-build >"$work/compose.log" 2>&1 || fail "podman-compose up failed"
  [ "$(running | wc -l)" = 3 ] || fail "podman-compose up did not start 3 containers"
}

for p in $ports; do
  if status "$p" >/dev/null; then fail "something already answers on port $p"; fi
done
up
wait_for 90 ring_whole || fail "the 3 nodes did not find each other in 90 s"
echo "3 nodes up, each with the other two in its leaf set"
first_ids=$(ids)
[ "$(printf '%s\n' "$first_ids" | sort -u | wc -l)" = 3 ] || fail "not 3 distinct node ids: $first_ids"
first_containers=$(running)

head -c 300000 /dev/urandom >"$work/object"
id=$(curl -sf --max-time 30 -T "$work/object" "http://127.0.0.1:$p1/v1/objects?name=check" \
     | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])') || fail "put through node1 failed"
curl -sf --max-time 30 -o "$work/back" "http://127.0.0.1:$p3/v1/objects/$id" || fail "get through node3 failed"
cmp -s "$work/object" "$work/back" || fail "node3 served different bytes"
echo "object $id put through node1, read back identical through node3"

compose down >"$work/compose.log" 2>&1 || fail "podman-compose down failed"
[ -z "$(running)" ] || fail "podman-compose down left containers running"
up
[ -z "$(comm -12 <(echo "$first_containers") <(running))" ] || fail "the same containers after down and up"
wait_for 90 ring_whole || fail "the restarted nodes did not find each other in 90 s"
[ "$(ids)" = "$first_ids" ] || fail "a node came back with another id: its volume was not kept"
rm -f "$work/back"
wait_for 60 curl -sf --max-time 30 -o "$work/back" "http://127.0.0.1:$p2/v1/objects/$id" \
  || fail "get through node2 after the restart failed"
cmp -s "$work/object" "$work/back" || fail "node2 served different bytes after the restart"
echo "after down and up: same 3 ids, the object read back identical through node2"
echo "container check passed"
