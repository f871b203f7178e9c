#!/usr/bin/env bash
# DNS benchmark: slipway vs Knot (knotd, one UDP worker) vs dnsmasq, serving the same names, in
# the same run, on loopback. The server is pinned to core 0, dnsperf (one thread) to core 1.
#
#   sudo benches/dns.sh                       # figures to stdout; see benches/RESULTS.md
#   BENCH_SECONDS=5 BENCH_RATE=20000 BENCH_REPEAT=12 sudo benches/dns.sh
#
# Workloads: A queries for 100 node names and for 10,000 node names of one cluster zone
# (prod.lab.example). For each: the highest rate dnsperf reaches (8 sockets, 500 outstanding,
# BENCH_SECONDS), then BENCH_REPEAT rounds of fixed-rate runs (BENCH_RUN_SECONDS each) at
# BENCH_RATE queries/s. All servers run at once (each on its own port, all pinned to core 0,
# idle but for the one being measured); in each round every server gets one run, in turns, and
# the next round starts with the next server, so a noisy second on the VM lands on all of them
# alike. Reported per server: p50/p99/p99.9 over every answer of every run (pooled), the median
# and range of the runs' own p99s, and in how many rounds its p99 was at or below Knot's run of
# the same round (equal servers: about half; BENCH_VERBOSE=1 lists every run's p99).
# BENCH_BIN=path runs that slipway binary instead of building one (e.g. a build of another commit).
# BENCH_TOGETHER=1 runs the servers' fixed-rate runs at the same time instead (one dnsperf each,
# all on core 1): a stall of either core then hits all servers at once, but they also compete
# for the cores, so the latencies are higher than in turns.
# BENCH_STALL_US=2000 stops the measured server (SIGSTOP/SIGCONT) for 2 ms every 50 ms during its
# fixed-rate runs: the same stalls for every server, to compare how each recovers from them.
# Before the rounds, a busy loop pinned to each core for 5 s measures how much of the time the
# VM took the core away (gaps in its clock readings): the floor under every server's tail.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
secs=${BENCH_SECONDS:-10}
rate=${BENCH_RATE:-20000}
repeat=${BENCH_REPEAT:-24}     # fixed-rate runs per server; their latencies are pooled
run_secs=${BENCH_RUN_SECONDS:-2}  # length of one fixed-rate run
servers=${BENCH_SERVERS:-"slipway knot dnsmasq"}
stall_us=${BENCH_STALL_US:-0}   # >0: every 50 ms the server is stopped this long during fixed-rate runs
together=${BENCH_TOGETHER:-0}  # 1: the fixed-rate runs of all servers at once instead of in turns
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

for tool in dnsperf knotd dnsmasq taskset cc; do
  command -v "$tool" >/dev/null || { echo "benches/dns.sh: needs $tool (apt-get install dnsperf knot dnsmasq-base util-linux gcc)" >&2; exit 1; }
done
bin=${BENCH_BIN:-}
if [ -z "$bin" ]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
  bin="$root/target/release/slipway"
fi

# Two small tools (C, built here): `stalls` spins for 5 s and reports the gaps in its clock
# readings; `stopper PID EVERY_US STALL_US SECONDS` stops PID for STALL_US every EVERY_US.
cat > "$work/stalls.c" <<'EOC'
#include <stdio.h>
#include <time.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1e6 + t.tv_nsec / 1e3; }
int main(void) {
  double start = now(), last = start, lost = 0, worst = 0; long over1ms = 0;
  for (;;) {
    double t = now(), gap = t - last; last = t;
    if (t - start > 5e6) break;
    if (gap > 50) { lost += gap; if (gap > worst) worst = gap; if (gap > 1000) over1ms++; }
  }
  printf("%.2f%% of the time in gaps > 50 us, %ld gaps > 1 ms, worst %.2f ms", lost / 5e4, over1ms, worst / 1e3);
  return 0;
}
EOC
cat > "$work/stopper.c" <<'EOC'
#include <signal.h>
#include <stdlib.h>
#include <time.h>
static void nap(long us) { struct timespec t = {us / 1000000, (us % 1000000) * 1000}; nanosleep(&t, 0); }
int main(int argc, char **argv) {
  if (argc != 5) return 2;
  pid_t pid = atoi(argv[1]); long every = atol(argv[2]), stall = atol(argv[3]);
  long n = (long)(atof(argv[4]) * 1e6 / every);
  for (long i = 0; i < n; i++) { nap(every - stall); kill(pid, SIGSTOP); nap(stall); kill(pid, SIGCONT); }
  return 0;
}
EOC
cc -O2 -o "$work/stalls" "$work/stalls.c"
cc -O2 -o "$work/stopper" "$work/stopper.c"

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
  local stopper= before
  before=$(counters "${pids[$1]}")
  if [ "$stall_us" -gt 0 ]; then
    taskset -c 1 "$work/stopper" "${pids[$1]}" 50000 "$stall_us" "$run_secs" & stopper=$!
  fi
  taskset -c 1 dnsperf -s $addr -p "$(port_of "$1")" -d "$work/queries" -l "$run_secs" -Q "$rate" -c 8 -T 1 -v 2>/dev/null |
    awk '$1 == ">" && $2 == "NOERROR" {print $NF * 1000}' | tee -a "$work/lat.$1" | sort -g |
    awk '{a[NR] = $1} END {if (NR) printf "%.3f", a[int(NR * 0.99)]; else print "-"}'
  if [ -n "$stopper" ]; then wait "$stopper" || true; kill -CONT "${pids[$1]}"; fi
  echo "$before $(counters "${pids[$1]}")" >> "$work/cnt.$1"
}

# "voluntary involuntary ticks" summed over the threads of process $1: context switches (a
# voluntary one is a sleep, i.e. one wake-up) and CPU time in clock ticks.
counters() {
  cat /proc/"$1"/task/*/status /proc/"$1"/task/*/stat 2>/dev/null | awk '
    /^voluntary_ctxt_switches/ {v += $2; next} /^nonvoluntary_ctxt_switches/ {n += $2; next}
    /^[0-9]+ \(/ {sub(/^.*\) /, ""); t += $12 + $13} END {print v + 0, n + 0, t + 0}'
}

# What server $1's threads did over all its fixed-rate runs: wake-ups per 1,000 answers,
# preemptions per 10 s, share of core 0.
work_done() {
  awk -v q="$(wc -l < "$work/lat.$1")" -v secs="$(( repeat * run_secs ))" -v hz="$(getconf CLK_TCK)" '
    {v += $4 - $1; n += $5 - $2; t += $6 - $3}
    END {printf "%.0f %.1f %.0f%%", q ? v * 1000 / q : 0, n * 10 / secs, t * 100 / (hz * secs)}' "$work/cnt.$1"
}

# "p50 p99 p99.9" in ms over every query of every fixed-rate run against server $1.
pooled() {
  sort -g "$work/lat.$1" | awk '{a[NR] = $1} END {if (NR) printf "%.3f %.3f %.3f", a[int(NR * 0.5)], a[int(NR * 0.99)], a[int(NR * 0.999)]; else print "- - -"}'
}

# "median min-max" of the runs' own p99s ($@).
spread() {
  printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {printf "%.3f %.3f-%.3f", a[int((NR + 1) / 2)], a[1], a[NR]}'
}

# Rounds in which server $1's p99 was at or below Knot's run of the same round: "k/N".
paired() {
  local -a mine theirs
  read -ra mine <<<"${runs[$1]}"
  read -ra theirs <<<"${runs[knot]:-}"
  [ "$1" != knot ] && [ ${#theirs[@]} -gt 0 ] || { echo "-"; return; }
  local k=0 i
  for i in "${!mine[@]}"; do
    awk -v a="${mine[$i]}" -v b="${theirs[$i]}" 'BEGIN {exit !(a <= b)}' && k=$((k + 1))
  done
  echo "$k/${#mine[@]}"
}

# The machine's own floor: a busy loop pinned to core $1 for 5 s (servers idle) counts the gaps
# in its clock readings, i.e. the time the core was taken from it (the hypervisor, interrupts).
# Any server's tail at a fixed rate includes these stalls.
stalls() {
  taskset -c "$1" "$work/stalls"
}

mode="taken in turns"
[ "$together" = 1 ] && mode="all servers at once"
[ "$stall_us" -gt 0 ] && mode+=", each server stopped for $stall_us us every 50 ms"
for n in 100 10000; do
  write_data "$n"
  head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"
  rm -rf "$work/slipway-$n" "$work/knot-db" "$work"/lat.* "$work"/cnt.*
  declare -A max=() runs=() cpu_max=()
  for s in $servers; do start "$s"; done
  for s in $servers; do
    before=$(counters "${pids[$s]}")
    out=$(taskset -c 1 dnsperf -s $addr -p "$(port_of "$s")" -d "$work/queries" -l "$secs" -c 8 -q 500 -T 1 2>&1)
    read -r _ _ t0 <<<"$before"
    read -r _ _ t1 <<<"$(counters "${pids[$s]}")"
    cpu_max[$s]=$(( (t1 - t0) * 100 / ($(getconf CLK_TCK) * secs) ))%
    max[$s]="$(awk '/Queries per second/ {printf "%.0f", $4}' <<<"$out") \
$(awk '/Queries lost/ {gsub(/[()%]/, "", $4); print $4}' <<<"$out") \
$(awk '/Average Latency/ {printf "%.3f", $4 * 1000}' <<<"$out")"
  done
  echo "$n names; core 0 (servers): $(stalls 0); core 1 (dnsperf): $(stalls 1)"
  read -ra order <<<"$servers"
  for _ in $(seq "$repeat"); do
    if [ "$together" = 1 ]; then
      # Every server's run at the same time: a stall of either core lands on all of them at once.
      declare -A runners=()
      for s in $servers; do fixed_run "$s" > "$work/run.$s" & runners[$s]=$!; done
      for s in $servers; do wait "${runners[$s]}"; runs[$s]+="$(cat "$work/run.$s") "; done
      unset runners
    else
      for s in "${order[@]}"; do runs[$s]+="$(fixed_run "$s") "; done
      order=("${order[@]:1}" "${order[0]}")  # the next round starts with the next server
    fi
  done
  printf '%-8s %-7s %10s %7s %8s %8s %8s %9s %18s %s\n' server names "max qps" "lost%" "avg ms" "p50 ms" "p99 ms" \
    "p99.9 ms" "runs' p99: median" "(min-max)  rounds at or below Knot's p99"
  for s in $servers; do
    # shellcheck disable=SC2086
    printf '%-8s %-7s %10s %7s %8s %8s %8s %9s %18s %-13s %s\n' "$s" "$n" ${max[$s]} $(pooled "$s") \
      $(spread ${runs[$s]}) "$(paired "$s")"
  done
  printf '%-8s %-7s %22s %26s %24s %22s\n' server names "server CPU at max rate" "wake-ups per 1,000 answers" \
    "preemptions per 10 s" "server CPU at $rate/s"
  for s in $servers; do
    # shellcheck disable=SC2046
    printf '%-8s %-7s %22s %26s %24s %22s\n' "$s" "$n" "${cpu_max[$s]}" $(work_done "$s")
  done
  [ -n "${BENCH_VERBOSE:-}" ] && for s in $servers; do echo "$s p99 of each run: ${runs[$s]}"; done
  for s in $servers; do stop "$s"; done
  unset max runs cpu_max
done
echo "(max rate: $secs s per server; p50/p99/p99.9 pooled over $repeat fixed-rate runs of $run_secs s per server at $rate queries/s, $mode; servers on core 0, dnsperf on core 1)"
