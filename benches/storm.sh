#!/usr/bin/env bash
# Boot storm, in one run (as root): STORM_CLIENTS machines (100) boot at once — the network side
# of it, as QEMU cannot boot a hundred VMs here. Each client is a network namespace on the
# server's bridge with its own MAC: DHCP (busybox udhcpc: DISCOVER, OFFER, REQUEST, ACK), its
# boot script over HTTP, then a kernel, a 60 MiB initrd and a 200 MiB rootfs over HTTP
# (benches/storm-fetch.py: one connection per file, bodies discarded in the kernel with
# MSG_TRUNC, so the one client core is not the limit as 100 curls copying every byte were); the
# first STORM_TFTP (20) fetch the iPXE binary over TFTP first (atftp, blksize 1468, windowsize
# 8). All start within one second. slipway (DHCP pool, TFTP, HTTP; the boot script rendered
# per machine) vs dnsmasq 2.90 (DHCP) + nginx (one worker, sendfile) + atftpd 0.8, in the same
# run, STORM_RUNS (3) rounds each, alternating. Figures: seconds from the start until the last
# client has everything, and the spread of the clients' finishing times (first, median, last).
# Servers on core 0, clients on core 1.
#
#   sudo benches/storm.sh                 # figures to stdout; see benches/RESULTS.md
#   STORM_CLIENTS=20 STORM_RUNS=1 sudo benches/storm.sh
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/nginx-peer.sh"
clients=${STORM_CLIENTS:-100}
tftp_clients=${STORM_TFTP:-20}
runs=${STORM_RUNS:-3}
work=$(mktemp -d /tmp/slipway-storm.XXXXXX)
chmod 755 "$work"
ns=sst$$
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for i in $(seq 0 $((clients - 1))); do
    for p in $(ip netns pids "$ns-$i" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$ns-$i" 2>/dev/null || true
  done
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

for t in curl atftp nginx dnsmasq busybox taskset python3; do
  command -v "$t" >/dev/null || { echo "benches/storm.sh: needs $t (apt-get install curl atftp nginx-light dnsmasq-base busybox-static)" >&2; exit 1; }
done
(cd "$work" && apt-get download -q atftpd >/dev/null 2>&1 && for d in *.deb; do dpkg -x "$d" peers; done)
atftpd="$work/peers/usr/sbin/atftpd"
dpkg-query -W -f='${Status}' libwrap0 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq libwrap0 >/dev/null
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
"$root/scripts/boot-kit" >/dev/null
bin="$root/target/release/slipway"

# The files: the boot kit's kernel, a 60 MiB initrd and a 200 MiB rootfs; the iPXE binary.
mkdir -p "$work/images" "$work/tftp" "$work/ref/nocloud" "$work/state"
cp "$root/target/boot-kit/vmlinuz" "$work/images/vmlinuz"
head -c $((60 << 20)) /dev/urandom > "$work/images/initrd.img"
head -c $((200 << 20)) /dev/urandom > "$work/images/rootfs.img"
cp -L /usr/lib/ipxe/ipxe.efi "$work/tftp/ipxe.efi"
ln -s "$work/images" "$work/ref/images"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"

# The server's namespace: a bridge; each client's namespace: one end of a veth on it.
ip netns add "$ns"; ip -n "$ns" link set lo up
ip -n "$ns" link add br0 type bridge; ip -n "$ns" addr add 10.30.0.1/24 dev br0; ip -n "$ns" link set br0 up
for i in $(seq 0 $((clients - 1))); do
  ip netns add "$ns-$i"; ip -n "$ns-$i" link set lo up
  ip link add "sa$$x$i" address "$(printf '52:54:00:30:%02x:%02x' $((i / 256)) $((i % 256)))" type veth peer name "sb$$x$i"
  ip link set "sa$$x$i" netns "$ns-$i" name eth0; ip link set "sb$$x$i" netns "$ns"
  ip -n "$ns" link set "sb$$x$i" master br0 up; ip -n "$ns-$i" link set eth0 up
done
cat > "$work/udhcpc.sh" <<'SH'
#!/bin/sh
case "$1" in bound|renew) ip addr flush dev "$interface"; ip addr add "$ip/${mask:-24}" dev "$interface" ;; esac
SH
# One client: DHCP, (TFTP), the boot script, the images; prints "index finished-at" or a failure.
cat > "$work/client.sh" <<'SH'
#!/bin/sh
i=$1 port=$2 tftp=$3 script=$4
busybox udhcpc -i eth0 -f -q -n -t 30 -T 1 -s "$WORK/udhcpc.sh" >/dev/null 2>&1 || { echo "$i failed dhcp"; exit 0; }
if [ "$tftp" = 1 ]; then
  atftp --option "blksize 1468" --option "windowsize 8" -g -r ipxe.efi -l /dev/null 10.30.0.1 69 >/dev/null 2>&1 || { echo "$i failed tftp"; exit 0; }
fi
bytes=$("$FETCH" 10.30.0.1 "$port" "$script" images/vmlinuz images/initrd.img images/rootfs.img 2>&1) || { echo "$i failed http: $bytes"; exit 0; }
[ "$bytes" -ge $((260 << 20)) ] || { echo "$i short: $bytes bytes"; exit 0; }
echo "$i $(date +%s.%N)"
SH
chmod -R a+rX "$work"; chmod +x "$work/udhcpc.sh" "$work/client.sh"

server() { ip netns exec "$ns" taskset -c 0 "$@" >"$work/server.log" 2>&1 & pids+=($!); sleep 0.7; }
stop_last() { local p=${pids[-1]}; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; sleep 0.3; }

# CPU seconds (user + system) the running servers and their children have used so far.
server_cpu() {
  local all=() p
  for p in "${pids[@]}"; do all+=("$p" $(pgrep -P "$p" || true)); done
  python3 -c '
import os, sys
tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in sys.argv[1:]:
    try:
        fields = open("/proc/%s/stat" % pid).read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    except OSError:
        pass
print("%.2f" % (total / tick))' "${all[@]}"
}

# Busy jiffies of cores 0 and 1 (everything but idle and iowait: processes, softirq, irq).
core_busy() {
  awk '/^cpu[01] / { print $2 + $3 + $4 + $7 + $8 }' /proc/stat | paste -sd' '
}

storm() { # port script-path -> "last first median spread failed server-cpu core0-busy core1-busy"
  local port=$1 script=$2 start out=() cpu0 busy0
  cpu0=$(server_cpu)
  busy0=$(core_busy)
  for i in $(seq 0 $((clients - 1))); do ip -n "$ns-$i" addr flush dev eth0; done
  start=$(date +%s.%N)
  for i in $(seq 0 $((clients - 1))); do
    WORK=$work FETCH=$root/benches/storm-fetch.py ip netns exec "$ns-$i" taskset -c 1 "$work/client.sh" "$i" "$port" "$([ "$i" -lt "$tftp_clients" ] && echo 1 || echo 0)" "$script" > "$work/out.$i" &
    out+=($!)
  done
  wait "${out[@]}" || true
  local cpu=$(python3 -c "print('%.2f' % ($(server_cpu) - $cpu0))")
  local busy=$(python3 -c "
import os
tick = os.sysconf('SC_CLK_TCK')
before, after = '$busy0'.split(), '$(core_busy)'.split()
print(' '.join('%.2f' % ((int(a) - int(b)) / tick) for a, b in zip(after, before)))")
  cat "$work"/out.* | python3 -c '
import sys, statistics
start = float(sys.argv[1])
done, failed = [], 0
for line in sys.stdin:
    parts = line.split()
    if len(parts) == 2:
        done.append(float(parts[1]) - start)
    else:
        failed += 1
        print("  " + line.strip(), file=sys.stderr)
done.sort()
if not done:
    print("all failed")
else:
    print("%.2f %.2f %.2f %.2f %d %s" % (done[-1], done[0], statistics.median(done), done[-1] - done[0], failed, sys.argv[2]))' "$start" "$cpu $busy"
  rm -f "$work"/out.*
}

slipway_config() {
  rm -rf "$work/state"; mkdir -p "$work/state"
  cat > "$work/slipway.toml" <<TOML
state_dir = "$work/state"
[admin]
listen = "127.0.0.1:19905"
token_file = "$work/token"
[dhcp]
interfaces = ["br0"]
[tftp]
listen = "10.30.0.1:69"
root = "$work/tftp"
[http]
listen = "10.30.0.1:8080"
images = "$work/images"
[[networks]]
name = "storm"
interface = "br0"
cidr = "10.30.0.0/24"
gateway = "10.30.0.1"
pool = { start = "10.30.0.10", end = "10.30.0.250" }
[[profiles]]
name = "storm"
kernel = "vmlinuz"
initrds = ["initrd.img"]
args = ["console=ttyS0", "root=live:{{server}}/images/rootfs.img"]
match = {}
TOML
}
slipway_config
# The reference serves the script slipway renders for a machine of the pool, as a file.
server "$bin" --log warn serve --config "$work/slipway.toml"
ip netns exec "$ns" curl -sf --interface 10.30.0.1 -o "$work/ref/boot.ipxe" http://10.30.0.1:8080/boot.ipxe || true
stop_last
nginx_conf "$work/nginx.conf" "$work" "sendfile on; default_type text/plain; server { listen 10.30.0.1:8081; root $work/ref; }"
chmod -R a+rX "$work"

echo "Boot storm: $clients clients at once ($tftp_clients fetch ipxe.efi over TFTP first), each DHCP + script + kernel + 60 MiB initrd + 200 MiB rootfs"
printf '%-22s %6s %8s %8s %8s %8s %7s %11s %7s %7s\n' setup round last first median spread failed server-cpu core0 core1
for r in $(seq "$runs"); do
  slipway_config
  server "$bin" --log warn serve --config "$work/slipway.toml"
  printf '%-22s %6s %s\n' slipway "$r" "$(storm 8080 boot.ipxe | awk '{printf "%8s %8s %8s %8s %7s %11s %7s %7s", $1, $2, $3, $4, $5, $6, $7, $8}')"
  stop_last
  server nginx -c "$work/nginx.conf" -g 'daemon off;'
  server "$atftpd" --daemon --no-fork --port 69 --bind-address 10.30.0.1 --user nobody --group nogroup --logfile /dev/null "$work/tftp"
  # --no-ping: slipway does not probe addresses either (its `probe` is off by default).
  server dnsmasq -k --port=0 --interface=br0 --bind-interfaces --no-ping --dhcp-range=10.30.0.10,10.30.0.250,1h \
    --dhcp-leasefile="$work/dnsmasq.leases" --pid-file="$work/dnsmasq.pid"
  printf '%-22s %6s %s\n' "dnsmasq+nginx+atftpd" "$r" "$(storm 8081 boot.ipxe | awk '{printf "%8s %8s %8s %8s %7s %11s %7s %7s", $1, $2, $3, $4, $5, $6, $7, $8}')"
  stop_last; stop_last; stop_last
  rm -f "$work/dnsmasq.leases"
done
echo "(seconds from the start; server-cpu: CPU seconds the server processes used during the round;"
echo " core0/core1: busy seconds of each core in the round, softirq included; servers on core 0, clients on core 1)"
