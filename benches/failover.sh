#!/usr/bin/env bash
# HA failover time: two slipway instances sharing a three-member etcd, keepalived (the shipped
# examples/ha/keepalived.conf) moving the DHCP address to the leader, perfdhcp relaying to that
# address at a steady rate. The leader is killed with SIGKILL KILLS times (default 10); each time
# the figure is the gap between the kill and the standby's first DHCP reply (tcpdump on the
# relay's side), then the killed instance is started again (it comes back as the standby).
#
#   sudo benches/failover.sh                  # 10 kills, lease_ttl 3s
#   KILLS=5 LEASE_TTL=10s sudo benches/failover.sh
#
# Needs: etcd, etcdctl (etcd-server, etcd-client), keepalived, perfdhcp (kea-admin), tcpdump,
# openssl, iproute2. Builds a release slipway unless BENCH_BIN names one.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/etcd-lib.sh
source "$root/benches/etcd-lib.sh"
kills=${KILLS:-10}
ttl=${LEASE_TTL:-3s}
work=$(mktemp -d /tmp/slipway-failover.XXXXXX)
hub=fohub$$ s1=fos1$$ s2=fos2$$ cli=focli$$
pids=()
cleanup() {
  for ns in "$cli" "$s1" "$s2" "$hub"; do
    for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
for tool in etcd keepalived perfdhcp tcpdump openssl; do
  command -v "$tool" >/dev/null || { echo "benches/failover.sh: needs $tool" >&2; exit 1; }
done
bin=${BENCH_BIN:-}
if [[ -z "$bin" ]]; then
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
  bin="$root/target/release/slipway"
fi

# The network: a bridge in the hub (etcd on 10.1.107.200), one namespace per instance
# (10.1.107.11, .12; the floating address is 10.1.107.2), the relay at 10.1.107.5.
for ns in "$hub" "$s1" "$s2" "$cli"; do ip netns add "$ns"; ip -n "$ns" link set lo up; done
ip -n "$hub" link add br0 type bridge
ip -n "$hub" addr add 10.1.107.200/24 dev br0
ip -n "$hub" link set br0 up
i=0
for end in "$s1 eth0 10.1.107.11/24" "$s2 eth0 10.1.107.12/24" "$cli cli0 10.1.107.5/24"; do
  read -r ns name cidr <<<"$end"
  ip link add "fo$$h$i" type veth peer name "fo$$i$i"
  ip link set "fo$$h$i" netns "$hub"; ip -n "$hub" link set "fo$$h$i" master br0 up
  ip link set "fo$$i$i" netns "$ns" name "$name"
  ip -n "$ns" addr add "$cidr" dev "$name"; ip -n "$ns" link set "$name" up
  i=$((i + 1))
done

# etcd: three members in the hub, TLS with client certificates.
pki=$work/etcd
etcd_pids=()
etcd_pki "$pki" 10.1.107.200
etcd_trio "$hub" 10.1.107.200 "$pki"
sleep 4

echo "token-for-benchmarks-only-0123456789" > "$work/token"
config() { # $1 = instance name
  mkdir -p "$work/$1"
  cat > "$work/$1/slipway.toml" <<EOF
state_dir = "$work/$1/state"
[admin]
listen = "127.0.0.1:9443"
token_file = "$work/token"
[dhcp]
interfaces = ["eth0"]
server_addresses = ["10.1.107.2"]
[[networks]]
name = "lab"
interface = "eth0"
cidr = "10.1.107.0/24"
pool = { start = "10.1.107.100", end = "10.1.107.250" }
lease_time = "1h"
EOF
  { etcd_store_toml 10.1.107.200 "$pki" "$1"; printf 'lease_ttl = "%s"\ntimeout = "2s"\n' "$ttl"; } >> "$work/$1/slipway.toml"
  # The shipped example's DHCP instance, on this lab's interface.
  sed -e 's/eth1/eth0/g' "$root/examples/ha/keepalived.conf" | sed '/^vrrp_instance slipway_frontends/,$d' \
    > "$work/$1/keepalived.conf"
}
start_slipway() { # $1 = namespace, $2 = instance
  ip netns exec "$1" "$bin" serve --config "$work/$2/slipway.toml" --log warn >>"$work/$2/slipway.log" 2>&1 &
  echo $! > "$work/$2/pid"
}
leader_of() { # $1 = namespace, $2 = instance: exit 0 if it leads
  ip netns exec "$1" curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:9443/readyz?role=leader"
}
for pair in "$s1 s1" "$s2 s2"; do
  read -r ns name <<<"$pair"
  config "$name"
  start_slipway "$ns" "$name"
  ip netns exec "$ns" keepalived --dont-fork --vrrp --use-file "$work/$name/keepalived.conf" \
    --pid="$work/$name/k.pid" --vrrp_pid="$work/$name/v.pid" >"$work/$name/keepalived.log" 2>&1 &
done
sleep 6

gaps=()
for n in $(seq 1 "$kills"); do
  if leader_of "$s1" s1; then lns=$s1 lname=s1; sns=$s2; sname=s2; else lns=$s2 lname=s2; sns=$s1; sname=s1; fi
  pcap=$work/run$n.pcap
  # Replies only: what the servers send to the relay.
  ip netns exec "$cli" tcpdump -i cli0 -n -U -w "$pcap" udp port 67 and not src host 10.1.107.5 2>/dev/null &
  dump=$!
  sleep 1
  ip netns exec "$cli" perfdhcp -4 -R 200 -r 100 -p 12 -l 10.1.107.5 10.1.107.2 >/dev/null 2>&1 &
  load=$!
  sleep 3
  killed=$(date +%s.%N)
  kill -9 "$(cat "$work/$lname/pid")"
  wait "$load" || true
  kill -INT "$dump"; wait "$dump" 2>/dev/null || true
  # The first reply from the standby (its replies leave from its own address, .11 or .12).
  from=$([[ $sname == s1 ]] && echo 10.1.107.11.67 || echo 10.1.107.12.67)
  gap=$(tcpdump -tt -n -r "$pcap" 2>/dev/null |
    awk -v k="$killed" -v from="$from" '$1 > k && $3 == from { printf "%.3f", $1 - k; exit }' || true)
  leads=$(leader_of "$sns" "$sname" && echo "$sname" || echo "nobody")
  echo "kill $n: $lname killed; $sname's first DHCP reply after ${gap:-none} s; leader now: $leads"
  gaps+=("${gap:-999}")
  start_slipway "$lns" "$lname"
  sleep 5
done
printf '%s\n' "${gaps[@]}" | sort -n | awk -v ttl="$ttl" '
  { v[NR] = $1; s += $1 }
  END { printf "lease_ttl %s, %d kills, the standby answering DHCP after the kill: min %.3f s, median %.3f s, max %.3f s, mean %.3f s\n",
        ttl, NR, v[1], v[int((NR + 1) / 2)], v[NR], s / NR }'
