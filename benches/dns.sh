#!/usr/bin/env bash
# DNS benchmark: slipway vs Knot (knotd, one UDP worker) vs dnsmasq, serving the same names, in
# the same run, on loopback. The server is pinned to core 0, dnsperf (one thread) to core 1.
#
#   sudo benches/dns.sh                       # figures to stdout; see benches/RESULTS.md
#   BENCH_SECONDS=5 BENCH_RATE=20000 sudo benches/dns.sh
#
# Workloads: A queries for 100 node names and for 10,000 node names of one cluster zone
# (prod.lab.example). For each: the highest rate dnsperf reaches (8 sockets, 500 outstanding),
# then a fixed-rate run at BENCH_RATE queries/s whose per-query latencies give p50/p99.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_SECONDS:-10}
rate=${BENCH_RATE:-20000}
repeat=${BENCH_REPEAT:-3}      # fixed-rate runs per server; the median p50/p99 is reported
servers=${BENCH_SERVERS:-"slipway knot dnsmasq"}
work=$(mktemp -d /tmp/slipway-dnsbench.XXXXXX)
chmod 755 "$work"   # dnsmasq reads its hosts file as nobody
addr=127.0.0.1 port=15353
pid=""

cleanup() {
  [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
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
    echo "[dns]"; echo "listen = [\"$addr:$port\"]"
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
    listen: $addr@$port
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
  case $1 in
    slipway) taskset -c 0 "$bin" --log warn serve --config "$work/slipway.toml" >"$work/server.log" 2>&1 & ;;
    knot) taskset -c 0 knotd -c "$work/knot.conf" >"$work/server.log" 2>&1 & ;;
    dnsmasq) taskset -c 0 dnsmasq -k -C /dev/null --no-resolv --no-hosts --addn-hosts="$work/hosts" \
      --listen-address=$addr --bind-interfaces --port=$port --cache-size=20000 --local=/lab.example/ \
      --pid-file="$work/dnsmasq.pid" >"$work/server.log" 2>&1 & ;;
  esac
  pid=$!
  for _ in $(seq 200); do
    dig +short +time=1 +tries=1 -p $port @$addr n0.prod.lab.example 2>/dev/null | grep -q 10.2.0.1 && return 0
    sleep 0.1
  done
  cat "$work/server.log" >&2; echo "benches/dns.sh: $1 did not answer" >&2; exit 1
}

stop() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  pid=""
}

printf '%-8s %-7s %12s %8s %10s %12s %12s\n' server names "max qps" "lost%" "avg ms" "p50 ms@rate" "p99 ms@rate"
for n in 100 10000; do
  write_data "$n"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  for s in $servers; do
    rm -rf "$work/slipway-$n" "$work/knot-db"
    start "$s"
    out=$(taskset -c 1 dnsperf -s $addr -p $port -d "$work/queries" -l "$secs" -c 8 -q 500 -T 1 2>&1)
    qps=$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$out")
    lost=$(awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' <<<"$out")
    avg=$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")
    runs=()
    for _ in $(seq "$repeat"); do
      runs+=("$(taskset -c 1 dnsperf -s $addr -p $port -d "$work/queries" -l "$secs" -Q "$rate" -c 8 -T 1 -v 2>/dev/null |
        awk '$1 == ">" && $2 == "NOERROR" {print $NF * 1000}' | sort -g |
        awk '{a[NR] = $1} END {if (NR) printf "%.3f %.3f", a[int(NR * 0.5)], a[int(NR * 0.99)]; else print "- -"}')")
    done
    # median of the runs, p50 and p99 separately
    lat="$(printf '%s\n' "${runs[@]}" | awk '{print $1}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}') \
$(printf '%s\n' "${runs[@]}" | awk '{print $2}' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')"
    echo "  $s $n fixed-rate runs (p50 p99 ms): ${runs[*]}" >&2
    printf '%-8s %-7s %12s %8s %10s %12s %12s\n' "$s" "$n" "$qps" "$lost" "$avg" ${lat}
    stop
  done
done
echo "(fixed rate: $rate queries/s, median of $repeat runs; $secs s per run; server on core 0, dnsperf on core 1)"
