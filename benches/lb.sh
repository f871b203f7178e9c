#!/usr/bin/env bash
# Load-balancer benchmark: direct vs through slipway vs through HAProxy 2.6 (mode tcp,
# nbthread 1, with and without `option splice-auto`), in one run, on loopback. The proxy is
# pinned to core 0; the load (iperf3 client and server, wrk and its nginx backend) to core 1.
#
#   sudo benches/lb.sh            # figures to stdout; see benches/RESULTS.md
#   BENCH_SECONDS=5 sudo benches/lb.sh
#
# iperf3: throughput with 1 and 8 streams. wrk: requests/s for a 612-byte page from nginx (one
# worker) with keep-alive (50 connections) and with `Connection: close` (a new connection per
# request).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_SECONDS:-5}
work=$(mktemp -d /tmp/slipway-lbbench.XXXXXX)
chmod 755 "$work"
pids=()
proxy_pid=""

cleanup() {
  [[ -n "$proxy_pid" ]] && kill "$proxy_pid" 2>/dev/null || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for tool in iperf3 haproxy wrk nginx taskset; do
  command -v "$tool" >/dev/null || { echo "benches/lb.sh: needs $tool (apt-get install iperf3 haproxy wrk nginx-light util-linux)" >&2; exit 1; }
done
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
bin="$root/target/release/slipway"

# Backends on core 1: iperf3 on 5201, nginx (one worker) on 8081.
taskset -c 1 iperf3 -s -p 5201 -D --pidfile "$work/iperf3.pid" >/dev/null
sleep 0.3; pids+=("$(cat "$work/iperf3.pid")")
mkdir -p "$work/www"; head -c 612 /dev/zero | tr '\0' 'x' > "$work/www/index.html"
cat > "$work/nginx.conf" <<NGINX
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.err;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen 127.0.0.1:8081; root $work/www; } }
NGINX
taskset -c 1 nginx -c "$work/nginx.conf"
sleep 0.3; pids+=("$(cat "$work/nginx.pid")")

start_slipway() {
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  cat > "$work/slipway.toml" <<TOML
state_dir = "$work/state"
[admin]
listen = "127.0.0.1:19903"
token_file = "$work/token"
[[lb.pools]]
name = "iperf"
backends = ["127.0.0.1:5201"]
[[lb.pools]]
name = "web"
backends = ["127.0.0.1:8081"]
[[lb.frontends]]
name = "iperf"
listen = "127.0.0.1:15201"
pool = "iperf"
[[lb.frontends]]
name = "web"
listen = "127.0.0.1:18081"
pool = "web"
TOML
  taskset -c 0 "$bin" --log warn serve --config "$work/slipway.toml" >"$work/slipway.log" 2>&1 &
  proxy_pid=$!
}

start_haproxy() { # $1 = splice|nosplice
  local splice=""
  [[ $1 == splice ]] && splice="option splice-auto"
  cat > "$work/haproxy.cfg" <<CFG
global
  nbthread 1
  maxconn 4000
defaults
  mode tcp
  timeout connect 3s
  timeout client 1h
  timeout server 1h
  $splice
frontend iperf
  bind 127.0.0.1:15201
  default_backend iperf
backend iperf
  server s1 127.0.0.1:5201
frontend web
  bind 127.0.0.1:18081
  default_backend web
backend web
  server s1 127.0.0.1:8081
CFG
  taskset -c 0 haproxy -f "$work/haproxy.cfg" >"$work/haproxy.log" 2>&1 &
  proxy_pid=$!
}

wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; return 1; }

gbits() { # port streams
  taskset -c 1 iperf3 -c 127.0.0.1 -p "$1" -P "$2" -t "$secs" -J 2>/dev/null |
    python3 -c 'import json,sys; print("%.2f" % (json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"] / 1e9))'
}
rps() { # port [extra wrk args]
  local port=$1; shift
  taskset -c 1 wrk -t1 -c50 -d"${secs}s" "$@" "http://127.0.0.1:$port/" 2>/dev/null | awk '/Requests\/sec/ {printf "%.0f", $2}'
}

printf '%-20s %14s %14s %14s %16s\n' path "1 stream Gb/s" "8 streams Gb/s" "keep-alive r/s" "conn-close r/s"
row() { # name iperf-port web-port
  printf '%-20s %14s %14s %14s %16s\n' "$1" "$(gbits "$2" 1)" "$(gbits "$2" 8)" "$(rps "$3")" "$(rps "$3" -H 'Connection: close')"
}
row direct 5201 8081
for proxy in slipway haproxy-nosplice haproxy-splice; do
  case $proxy in
    slipway) start_slipway ;;
    haproxy-nosplice) start_haproxy nosplice ;;
    haproxy-splice) start_haproxy splice ;;
  esac
  wait_port 15201; wait_port 18081
  row "$proxy" 15201 18081
  kill "$proxy_pid"; wait "$proxy_pid" 2>/dev/null || true; proxy_pid=""
  sleep 0.5
done
echo "(proxy on core 0; iperf3, nginx and wrk on core 1; $secs s per figure)"
