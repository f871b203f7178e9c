#!/usr/bin/env bash
# DHCP benchmark: slipway vs Kea 2.2 (kea-dhcp4, memfile with persist=true, one thread), in the
# same run, on the same namespace pair. The server is pinned to core 0, perfdhcp (a relay) to
# core 1. For each server and workload it searches the highest DORA rate with < 1% drops.
#
#   sudo benches/dhcp.sh            # writes the figures to stdout; see benches/RESULTS.md
#   BENCH_SERVERS=slipway BENCH_WORKLOADS=pool BENCH_SECONDS=5 sudo benches/dhcp.sh   # a subset
#
# Servers: kea, slipway (the embedded store) and slipway-etcd ([store] backend = "etcd": a
# three-member etcd 3.4 with TLS and client certificates, in the server's namespace and on the
# server's core, fsync on: every lease is a fenced etcd transaction committed by a quorum
# before its ACK leaves). Its CPU figures count the etcd members' time too.
#
# Workloads: "reservations" (10,000 reserved MACs, perfdhcp's clients are exactly those) and
# "pool" (unknown clients served from a dynamic pool).
#
# perfdhcp runs in its single-thread mode (-g single): pinned to one core, its default receiver
# thread only competes with its sender. It stands for thousands of clients behind one socket, so
# for the run net.core.rmem_default is raised to 4 MiB (restored on exit; it cannot be set per
# namespace): with the default 208 KiB, a server that answers in bursts (group commit: a batch's
# replies leave together once its leases are synced) overflows perfdhcp's socket, not a real
# client's. The servers' sockets get the same default.
#
# BENCH_CPU_SHARE=30 caps the server at that percentage of its core (a cgroup CPU quota; cgroup
# v1 or v2), so that the server, not perfdhcp's one core, is the limit: the rates are then the
# servers' throughput on equal CPU budgets, measured rather than estimated from CPU use.
#
# BENCH_RATE=20000 skips the search: one run at that offered rate per server and workload, with
# the CPU ticks (1/100 s) each of the server's threads used during it, summed by thread name.
# Use BENCH_SECONDS=10 for steadier figures. With BENCH_RATE, BENCH_PERF=prefix also records a
# CPU profile of the server during each run (`perf record -g`, to prefix.<server>.<workload>);
# BENCH_BIN=path runs that slipway binary instead of building one (e.g. a build with frame
# pointers and line tables for the profile).
#
# Besides the rate, each line shows the server's CPU use during that run (utime + stime of its
# process, all threads, over the run) and the rate per fully used server core (rate / CPU): when
# perfdhcp, not the server, is the limit, that is the server's headroom.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/etcd-lib.sh
source "$root/benches/etcd-lib.sh"
secs=${BENCH_SECONDS:-5}
work=$(mktemp -d /tmp/slipway-bench.XXXXXX)
srv=swbs$$ cli=swbc$$
server_pid=""
etcd_pids=()
share=${BENCH_CPU_SHARE:-}
fixed=${BENCH_RATE:-}
cgroup=""

rmem_default=$(sysctl -n net.core.rmem_default)
cleanup() {
  sysctl -qw net.core.rmem_default="$rmem_default"
  [[ -n "$server_pid" ]] && kill "$server_pid" 2>/dev/null || true
  for p in "${etcd_pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for ns in "$cli" "$srv"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  [[ -n "$cgroup" ]] && rmdir "$cgroup" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for tool in perfdhcp kea-dhcp4 taskset etcd openssl; do
  command -v "$tool" >/dev/null || { echo "benches/dhcp.sh: needs $tool (apt-get install kea-admin kea-dhcp4-server util-linux)" >&2; exit 1; }
done
bin=${BENCH_BIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
  bin="$root/target/release/slipway"
fi

sysctl -qw net.core.rmem_default=$((4 << 20))
if [[ -n "$share" ]]; then
  # A 10 ms period: a throttled server pauses for at most a few milliseconds at a time.
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    cgroup=/sys/fs/cgroup/slipway-bench-$$
    echo +cpu > /sys/fs/cgroup/cgroup.subtree_control
    mkdir "$cgroup"; echo "$((share * 100)) 10000" > "$cgroup/cpu.max"
  else
    cgroup=/sys/fs/cgroup/cpu/slipway-bench-$$
    mkdir "$cgroup"; echo 10000 > "$cgroup/cpu.cfs_period_us"; echo $((share * 100)) > "$cgroup/cpu.cfs_quota_us"
  fi
fi
ip netns add "$srv"; ip netns add "$cli"
ip link add "b$$s" type veth peer name "b$$c"
ip link set "b$$s" netns "$srv" name srv0; ip link set "b$$c" netns "$cli" name cli0
ip -n "$srv" addr add 10.1.0.1/16 dev srv0; ip -n "$cli" addr add 10.1.0.2/16 dev cli0
for ns in "$srv" "$cli"; do ip -n "$ns" link set lo up; done
ip -n "$srv" link set srv0 up; ip -n "$cli" link set cli0 up

# 10,000 reservations: MAC 00:0c:00:00:HH:LL -> 10.1.(1 + i/250).(1 + i%250)
mac() { printf '00:0c:00:00:%02x:%02x' $(($1 / 256)) $(($1 % 256)); }
addr() { echo "10.1.$((1 + $1 / 250)).$((1 + $1 % 250))"; }

write_slipway() { # $1 = reservations|pool
  {
    echo "state_dir = \"$work/slipway-$1\""
    echo "[admin]"; echo "listen = \"127.0.0.1:19900\""; echo "token_file = \"$work/token\""
    echo "[events]"; echo "max_count = 100000"
    echo "[dhcp]"; echo "interfaces = [\"srv0\"]"
    echo "[[networks]]"; echo "name = \"bench\""; echo "interface = \"srv0\""; echo "cidr = \"10.1.0.0/16\""
    echo "static_range = { start = \"10.1.1.1\", end = \"10.1.60.250\" }"
    echo "pool = { start = \"10.1.100.1\", end = \"10.1.200.250\" }"; echo "lease_time = \"1h\""
    if [[ $1 == reservations ]]; then
      for i in $(seq 0 9999); do printf '[[nodes]]\nname = "n%d"\nmac = "%s"\nipv4 = "%s"\n' "$i" "$(mac "$i")" "$(addr "$i")"; done
    fi
  } > "$work/slipway.toml"
}

# A three-member etcd in the server's namespace on loopback, on the server's core.
start_etcd() {
  etcd_pki "$work/etcd" 127.0.0.1
  etcd_trio "$srv" 127.0.0.1 "$work/etcd" 0
  sleep 3
}

stop_etcd() {
  for p in "${etcd_pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  etcd_pids=()
  rm -rf "$work/etcd"
}

write_kea() { # $1 = reservations|pool
  {
    echo '{"Dhcp4": {"interfaces-config": {"interfaces": ["srv0"], "dhcp-socket-type": "udp"},'
    echo " \"lease-database\": {\"type\": \"memfile\", \"persist\": true, \"name\": \"$work/kea-$1.csv\", \"lfc-interval\": 0},"
    echo ' "multi-threading": {"enable-multi-threading": false}, "valid-lifetime": 3600,'
    echo " \"control-socket\": {\"socket-type\": \"unix\", \"socket-name\": \"$work/kea.sock\"},"
    echo ' "loggers": [{"name": "kea-dhcp4", "severity": "ERROR", "output_options": [{"output": "stderr"}]}],'
    echo ' "subnet4": [{"id": 1, "subnet": "10.1.0.0/16", "pools": [{"pool": "10.1.100.1 - 10.1.200.250"}], "reservations": ['
    if [[ $1 == reservations ]]; then
      for i in $(seq 0 9999); do
        [[ $i -gt 0 ]] && echo ","
        printf '{"hw-address": "%s", "ip-address": "%s"}' "$(mac "$i")" "$(addr "$i")"
      done
    fi
    echo ']}]}}'
  } > "$work/kea.json"
}

start_server() { # $1 = slipway|slipway-etcd|kea, $2 = workload
  if [[ $1 == slipway* ]]; then
    write_slipway "$2"
    if [[ $1 == slipway-etcd ]]; then
      start_etcd
      etcd_store_toml 127.0.0.1 "$work/etcd" bench > "$work/store.toml"
      cat "$work/store.toml" >> "$work/slipway.toml"
    fi
    ip netns exec "$srv" taskset -c 0 "$bin" serve --config "$work/slipway.toml" --log warn >"$work/server.log" 2>&1 &
  else
    write_kea "$2"
    KEA_PIDFILE_DIR=$work KEA_LOCKFILE_DIR=$work ip netns exec "$srv" taskset -c 0 kea-dhcp4 -c "$work/kea.json" >"$work/server.log" 2>&1 &
  fi
  server_pid=$!
  [[ -n "$cgroup" ]] && for p in "$server_pid" "${etcd_pids[@]}"; do echo "$p" > "$cgroup/cgroup.procs"; done
  sleep 3
  kill -0 "$server_pid" || { cat "$work/server.log" >&2; exit 1; }
}

stop_server() { kill -TERM "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; stop_etcd; }

# CPU ticks (1/100 s) each of the server's threads (by name, summed) has used so far.
threads() {
  for t in /proc/"$server_pid"/task/*; do echo "$(tr ' ' _ < "$t/comm") $(awk '{print $14 + $15}' "$t/stat")"; done |
    awk '{ a[$1] += $2 } END { for (k in a) print k, a[k] }' | sort
}

# CPU ticks (1/100 s) the server process (and its etcd members) have used so far, all threads.
cpu_ticks() {
  local p total=0
  for p in "$server_pid" "${etcd_pids[@]}"; do total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  echo "$total"
}

# One perfdhcp run at rate $1; the rest are perfdhcp's client options.
# Prints "rate drops% server-cpu%".
run_rate() {
  local rate_arg=$1 out before after
  shift
  before=$(cpu_ticks)
  out=$(ip netns exec "$cli" taskset -c 1 perfdhcp -4 -g single -r "$rate_arg" -p "$secs" -W 1000000 "$@" -l 10.1.0.2 10.1.0.1 2>&1 || true)
  after=$(cpu_ticks)
  local rate sent recv
  rate=$(awk '/^Rate:/ {print $2; exit}' <<<"$out")
  sent=$(awk '/sent packets:/ {s += $3} END {print s + 0}' <<<"$out")
  recv=$(awk '/received packets:/ {s += $3} END {print s + 0}' <<<"$out")
  awk -v r="${rate:-0}" -v s="$sent" -v c="$recv" -v t=$((after - before)) -v p="$secs" \
    'BEGIN { d = (s > 0) ? 100 * (s - c) / s : 100; printf "%.0f %.2f %.0f\n", r, d, t / p }'
}

# Highest rate with < 1% drops (doubling, then bisection). Prints "rate drops cpu".
search() { # perfdhcp client options
  local lo=0 hi=1000 best="0 100 0" result
  while :; do
    result=$(run_rate "$hi" "$@")
    if awk -v d="$(cut -d' ' -f2 <<<"$result")" 'BEGIN { exit !(d < 1) }'; then lo=$hi; best=$result; hi=$((hi * 2)); [[ $hi -gt 128000 ]] && break; else break; fi
  done
  for _ in 1 2 3 4; do
    local mid=$(((lo + hi) / 2))
    [[ $mid -le $lo ]] && break
    result=$(run_rate "$mid" "$@")
    if awk -v d="$(cut -d' ' -f2 <<<"$result")" 'BEGIN { exit !(d < 1) }'; then lo=$mid; best=$result; else hi=$mid; fi
  done
  echo "$best"
}

echo "token-for-benchmarks-only-0123456789" > "$work/token"
for i in $(seq 0 9999); do mac "$i"; echo; done > "$work/macs"
printf '%-12s  %-13s  %18s  %8s  %12s  %16s  %s\n' server workload "$([[ -n "$fixed" ]] && echo "DORA/s at $fixed" || echo "max DORA/s (<1%)")" "drops %" "server CPU %" "DORA/s per core" "${fixed:+CPU ticks per thread}"
for workload in ${BENCH_WORKLOADS:-reservations pool}; do
  for server in ${BENCH_SERVERS:-kea slipway}; do
    start_server "$server" "$workload"
    if [[ $workload == reservations ]]; then clients=(-M "$work/macs"); else clients=(-R 20000 -b mac=00:0d:00:00:00:00); fi
    if [[ -n "$fixed" ]]; then
      threads > "$work/t0"
      perf_pid=""
      if [[ -n "${BENCH_PERF:-}" ]]; then
        perf record -q -g -F 2500 -p "$server_pid" -o "$BENCH_PERF.$server.$workload" -- sleep "$secs" 2>/dev/null &
        perf_pid=$!
      fi
      read -r rate drops cpu < <(run_rate "$fixed" "${clients[@]}")
      threads > "$work/t1"
      [[ -n "$perf_pid" ]] && wait "$perf_pid"
      per_thread=$(join -a 2 -e 0 -o 0,1.2,2.2 "$work/t0" "$work/t1" | awk '{ printf "%s=%d ", $1, $3 - $2 }')
    else
      read -r rate drops cpu < <(search "${clients[@]}")
      per_thread=""
    fi
    per_core=$(awk -v r="$rate" -v c="$cpu" 'BEGIN { printf "%.0f", (c > 0) ? r * 100 / c : 0 }')
    printf '%-12s  %-13s  %18s  %8s  %12s  %16s  %s\n' "$server" "$workload" "$rate" "$drops" "$cpu" "$per_core" "$per_thread"
    stop_server
  done
done
