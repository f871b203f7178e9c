#!/usr/bin/env bash
# DNS benchmark: slipway vs Knot (knotd, one UDP worker) vs dnsmasq, serving the same names, in
# the same run, on loopback. The server is pinned to core 0, dnsperf (one thread) to core 1.
#
#   sudo benches/dns.sh                       # figures to stdout; see benches/RESULTS.md
#   BENCH_SECONDS=5 BENCH_RATE=20000 sudo benches/dns.sh
#
# Workloads: A queries for 100 node names and for 10,000 node names of one cluster zone
# (prod.lab.example). For each: the highest rate dnsperf reaches (8 sockets, 500 outstanding),
# then BENCH_REPEAT fixed-rate runs at BENCH_RATE queries/s whose per-query latencies, pooled,
# give p50/p99/p99.9 (each run's own p99 is shown too, for the spread between runs). All
# servers run at once (each on its own port, all pinned to core 0, idle but for the one being
# measured) and the fixed-rate runs take turns (slipway, knot, dnsmasq, slipway, ...), so a
# noisy minute on the VM lands on every server instead of on one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_SECONDS:-10}
rate=${BENCH_RATE:-20000}
repeat=${BENCH_REPEAT:-3}      # fixed-rate runs per server; their latencies are pooled
servers=${BENCH_SERVERS:-"slipway knot dnsmasq"}
work=$(mktemp -d /tmp/slipway-dnsbench.XXXXXX)
chmod 755 "$work"   # dnsmasq reads its hosts file as nobody
addr=127.0.0.1
declare -A pids=()
port_of() { case $1 in slipway) echo 15353 ;; knot) echo 15354 ;; dnsmasq) echo 15355 ;; esac; }

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

for tool in dnsperf knotd dnsmasq taskset; do
  command -v "$tool" >/dev/null || { echo "benches/dns.sh: needs $tool (apt-get install dnsperf knot dnsmasq-base util-linux)" >&2; exit 1; }
done
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
bin="$root/target/release/slipway"

# 10,000 nodes: n<i>.prod.lab.example -> 10.2.(i/250).(1 + i%250)
ip_of() { echo "10.2.$(($1 / 250)).$((1 + $1 % 250))"; }

write_data() { # $1 = node count
  n=$1
  # slipway
  {
    echo "state_dir = \"$work/slipway-$n\""
    echo "[admin]"; echo "listen = \"127.0.0.1:19901\""; echo "token_file = \"$work/token\""
    echo "[dns]"; echo "listen = [\"$addr:$(port_of slipway)\"]"
    echo "[[networks]]"; echo "name = \"bench\""; echo "interface = \"lo\""; echo "cidr = \"10.2.0.0/16\""
    echo "[[clusters]]"; echo "name = \"prod\""; echo "kind = \"okd\""; echo "base_domain = \"lab.example\""
    echo "network = \"bench\""; echo "api_address = \"192.0.2.10\""; echo "api_int_address = \"10.2.200.1\""
    echo "ingress_address = \"192.0.2.11\""
    for i in $(seq 0 $((n - 1))); do
      printf '[[nodes]]\nname = "n%d"\ncluster = "prod"\nmac = "02:00:00:00:%02x:%02x"\nipv4 = "%s"\n' \
        "$i" $((i / 256)) $((i % 256)) "$(ip_of "$i")"
    done
  } > "$work/slipway.toml"
  # Knot: the same zone
  {
    echo "\$ORIGIN prod.lab.example."; echo "\$TTL 60"
    echo "@ SOA ns hostmaster 1 3600 600 86400 30"; echo "@ NS ns"
    echo "api A 192.0.2.10"; echo "api-int A 10.2.200.1"; echo "*.apps A 192.0.2.11"
    for i in $(seq 0 $((n - 1))); do echo "n$i A $(ip_of "$i")"; done
  } > "$work/prod.zone"
  cat > "$work/knot.conf" <<EOF
server:
    listen: $addr@$(port_of knot)
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
    rundir: "$work"
database:
    storage: "$work/knot-db"
log:
  - target: stderr
    any: error
zone:
  - domain: prod.lab.example
    file: "$work/prod.zone"
EOF
  # dnsmasq: the same names from a hosts file, authoritative-style (no upstream)
  for i in $(seq 0 $((n - 1))); do echo "$(ip_of "$i") n$i.prod.lab.example"; done > "$work/hosts"
  # queries
  for i in $(seq 0 $((n - 1))); do echo "n$i.prod.lab.example A"; done | shuf --random-source=<(yes) > "$work/queries"
}

start() { # $1 = server
  local port
  port=$(port_of "$1")
  case $1 in
    slipway) taskset -c 0 "$bin" --log warn serve --config "$work/slipway.toml" >"$work/$1.log" 2>&1 & ;;
    knot) taskset -c 0 knotd -c "$work/knot.conf" >"$work/$1.log" 2>&1 & ;;
    dnsmasq) taskset -c 0 dnsmasq -k -C /dev/null --no-resolv --no-hosts --addn-hosts="$work/hosts" \
      --listen-address=$addr --bind-interfaces --port="$port" --cache-size=20000 --local=/lab.example/ \
      --pid-file="$work/dnsmasq.pid" >"$work/$1.log" 2>&1 & ;;
  esac
  pids[$1]=$!
  for _ in $(seq 200); do
    dig +short +time=1 +tries=1 -p "$port" @$addr n0.prod.lab.example 2>/dev/null | grep -q 10.2.0.1 && return 0
    sleep 0.1
  done
  cat "$work/$1.log" >&2; echo "benches/dns.sh: $1 did not answer" >&2; exit 1
}

stop() { # $1 = server
  kill "${pids[$1]}" 2>/dev/null || true
  wait "${pids[$1]}" 2>/dev/null || true
  unset "pids[$1]"
}

# One fixed-rate run against server $1: its per-query latencies (ms) are added to
# $work/lat.$1; prints the run's own p99.
fixed_run() {
  taskset -c 1 dnsperf -s $addr -p "$(port_of "$1")" -d "$work/queries" -l "$secs" -Q "$rate" -c 8 -T 1 -v 2>/dev/null |
    awk '$1 == ">" && $2 == "NOERROR" {print $NF * 1000}' | tee -a "$work/lat.$1" | sort -g |
    awk '{a[NR] = $1} END {if (NR) printf "%.3f", a[int(NR * 0.99)]; else print "-"}'
}

# "p50 p99 p99.9" in ms over every query of every fixed-rate run against server $1.
pooled() {
  sort -g "$work/lat.$1" | awk '{a[NR] = $1} END {if (NR) printf "%.3f %.3f %.3f", a[int(NR * 0.5)], a[int(NR * 0.99)], a[int(NR * 0.999)]; else print "- - -"}'
}

printf '%-8s %-7s %10s %7s %8s %8s %8s %9s %s\n' server names "max qps" "lost%" "avg ms" "p50 ms" "p99 ms" "p99.9 ms" "p99 of each run"
for n in 100 10000; do
  write_data "$n"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  rm -rf "$work/slipway-$n" "$work/knot-db" "$work"/lat.*
  declare -A max=() runs=()
  for s in $servers; do start "$s"; done
  for s in $servers; do
    out=$(taskset -c 1 dnsperf -s $addr -p "$(port_of "$s")" -d "$work/queries" -l "$secs" -c 8 -q 500 -T 1 2>&1)
    max[$s]="$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$out") \
$(awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' <<<"$out") \
$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")"
  done
  for _ in $(seq "$repeat"); do
    for s in $servers; do runs[$s]+="$(fixed_run "$s") "; done
  done
  for s in $servers; do
    # shellcheck disable=SC2086
    printf '%-8s %-7s %10s %7s %8s %8s %8s %9s %s\n' "$s" "$n" ${max[$s]} $(pooled "$s") "${runs[$s]}"
  done
  for s in $servers; do stop "$s"; done
  unset max runs
done
echo "(p50/p99/p99.9 over all $repeat fixed-rate runs per server at $rate queries/s, taken in turns; $secs s per run; servers on core 0, dnsperf on core 1)"
