#!/usr/bin/env bash
# A burst of 2,000 TCP connections (benches/connect-burst.py: one client thread on core 1,
# 50 loopback source addresses, held open, then one request each) against slipway's admin API
# and HTTP boot service and nginx (one worker, return 200), each server on core 0, in the same
# run, BURST_RUNS (3) rounds. As root or not; loopback only.
#
#   benches/connect-burst.sh [SLIPWAY-BINARY]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/nginx-peer.sh"
bin=${1:-$root/target/release/slipway}
runs=${BURST_RUNS:-3}
[[ -x "$bin" ]] || cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
mkdir -p "$work/images"
cat > "$work/slipway.toml" <<TOML
state_dir = "$work/state"
[admin]
listen = "127.0.0.1:19981"
token_file = "$work/token"
[http]
listen = "127.0.0.1:19982"
images = "$work/images"
TOML
nginx_conf "$work/nginx.conf" "$work" 'server { listen 127.0.0.1:19983; location / { return 200 "ok"; } }'
taskset -c 0 "$bin" --log warn serve --config "$work/slipway.toml" > "$work/slipway.log" 2>&1 & pids+=($!)
taskset -c 0 nginx -c "$work/nginx.conf" -g 'daemon off;' & pids+=($!)
sleep 1
for r in $(seq "$runs"); do
  for target in "slipway-admin 19981 /healthz" "slipway-boot 19982 /images/none" "nginx 19983 /"; do
    set -- $target
    printf '%-14s round %s: %s\n' "$1" "$r" "$(taskset -c 1 python3 "$root/benches/connect-burst.py" "$2" 2000 "$3")"
    sleep 1
  done
done
