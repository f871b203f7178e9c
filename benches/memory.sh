#!/usr/bin/env bash
# slipway's resident memory with a large state, as root: 10,000 nodes (one apply through the
# API), 10,000 leases and 100,000 events (perfdhcp as a relay: DORAs from 10,000 MACs until
# the event log holds its 100,000), then the daemon restarted on that state and measured
# again. Bounded: perfdhcp by count and test period, every wait by a timeout. Release build.
#
#   sudo benches/memory.sh            # figures to stdout; see benches/RESULTS.md
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
command -v perfdhcp >/dev/null || { echo "benches/memory.sh: needs perfdhcp (apt-get install kea-admin)" >&2; exit 1; }
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
bin="$root/target/release/slipway"
work=$(mktemp -d /tmp/slipway-memory.XXXXXX)
ns=smem$$
pid=
cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
  for n in "$ns" "$ns-c"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

ip netns add "$ns"; ip netns add "$ns-c"
ip link add "m$$a" type veth peer name "m$$b"
ip link set "m$$a" netns "$ns" name srv0; ip link set "m$$b" netns "$ns-c" name cli0
ip -n "$ns" addr add 10.40.0.1/16 dev srv0; ip -n "$ns" link set srv0 up; ip -n "$ns" link set lo up
ip -n "$ns-c" addr add 10.40.0.5/16 dev cli0; ip -n "$ns-c" link set cli0 up; ip -n "$ns-c" link set lo up
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
cat > "$work/slipway.toml" <<TOML
state_dir = "$work/state"
[admin]
listen = "127.0.0.1:19990"
token_file = "$work/token"
[dhcp]
interfaces = ["srv0"]
[[networks]]
name = "big"
interface = "srv0"
cidr = "10.40.0.0/16"
gateway = "10.40.0.1"
static_range = { start = "10.40.100.0", end = "10.40.199.255" }
pool = { start = "10.40.1.0", end = "10.40.60.255" }
lease_time = "12h"
TOML
start() {
  ip netns exec "$ns" "$bin" --log warn serve --config "$work/slipway.toml" > "$work/log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    ip netns exec "$ns" curl -sf -o /dev/null http://127.0.0.1:19990/readyz && return 0
    sleep 0.1
  done
  echo "slipway did not start:" >&2; cat "$work/log" >&2; exit 1
}
rss() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status"; }
api() { ip netns exec "$ns" curl -sf -H "Authorization: Bearer $(cat "$work/token")" "$@"; }
count() { api "http://127.0.0.1:19990/api/v1/$1" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }

start
echo "empty: RSS $(rss) MB"
python3 - "$work/apply.json" <<'PY'
import json, sys
nodes = [{"name": "n%05d" % i, "mac": "52:54:01:%02x:%02x:%02x" % (i >> 16, (i >> 8) & 255, i & 255),
          "ipv4": "10.40.%d.%d" % (100 + i // 256, i % 256)} for i in range(10000)]
json.dump({"nodes": nodes}, open(sys.argv[1], "w"))
PY
api -X POST -H 'Content-Type: application/json' --data-binary @"$work/apply.json" -o /dev/null http://127.0.0.1:19990/api/v1/apply
echo "10,000 nodes: RSS $(rss) MB"
# DORAs from 10,000 MACs (perfdhcp draws them at random): leases, and two events each.
for round in 1 2 3 4 5 6; do
  ip netns exec "$ns-c" timeout 120 perfdhcp -4 -R 10000 -r 2000 -n 20000 -p 60 -l 10.40.0.5 10.40.0.1 > "$work/perfdhcp.$round" 2>&1 || true
done
leases=$(count leases)
events=$(api "http://127.0.0.1:19990/api/v1/events?limit=10000&since=1d" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
echo "with $leases leases (events: the last 10,000 of the log listed, $events): RSS $(rss) MB"
kill "$pid"; wait "$pid" 2>/dev/null || true; pid=
start
sleep 2
nodes=$(count nodes); leases=$(count leases)
echo "restarted on that state ($nodes nodes, $leases leases, the event log full): RSS $(rss) MB"
ls -la "$work/state" | awk 'NR > 1 { print "  " $5, $9 }'
