#!/usr/bin/env bash
# Network-boot benchmark, in one run (as root):
#   TFTP  a 32 MiB file, one client and 20 at once, slipway vs atftpd 0.8 and tftpd-hpa 5.2, over
#         loopback and over a veth pair (MTU 1500); clients are atftp with blksize 1468 and
#         windowsize 8 (servers that lack an option fall back).
#   HTTP  a 256 MiB image (curl, median of 3) and the boot-script request rate (wrk, 1 thread,
#         50 connections), slipway vs nginx with one worker serving the same bytes as files.
#   Boot  seconds from QEMU start (TCG) to the VM printing its user-data, per mode (BIOS and
#         UEFI with the iPXE NIC ROM; UEFI firmware PXE with ipxe.efi or snponly.efi over TFTP),
#         split into phases from a capture on the bridge (benches/boot-phases.py): slipway vs
#         dnsmasq + nginx, both with router advertisements; median of BOOT_RUNS (3).
# Servers on core 0, clients on core 1. Peers that conflict as packages (atftpd, tftpd-hpa) are
# unpacked from their .deb files, not installed.
#
#   sudo benches/boot.sh                       # figures to stdout; see benches/RESULTS.md
#   BENCH_SECONDS=5 BOOT_RUNS=3 sudo benches/boot.sh
#   BENCH_ONLY=tftp,http sudo benches/boot.sh  # some sections only
#   BENCH_ONLY=boot BOOT_MODES=uefi-pxe,uefi-pxe-snp BOOT_NIC=e1000 sudo benches/boot.sh
#   BOOT_PCAPS=/tmp/pcaps ...                  # keep each boot's capture there
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
. "$root/benches/nginx-peer.sh"
secs=${BENCH_SECONDS:-5}
runs=${BOOT_RUNS:-3}
only=${BENCH_ONLY:-tftp,http,boot}
want() { [[ ",$only," == *",$1,"* ]]; }
work=$(mktemp -d /tmp/slipway-bootbench.XXXXXX)
chmod 755 "$work"
ns=sbb$$; cns=sbc$$; qns=sbq$$
pids=()

cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for n in "$ns" "$cns" "$qns"; do
    for p in $(ip netns pids "$n" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
    ip netns del "$n" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT

need=(atftp curl wrk nginx dnsmasq qemu-system-x86_64 taskset busybox python3 tcpdump)
for t in "${need[@]}"; do
  command -v "$t" >/dev/null || { echo "benches/boot.sh: needs $t (apt-get install atftp curl wrk nginx-light dnsmasq-base qemu-system-x86 ipxe-qemu ipxe ovmf busybox-static tcpdump)" >&2; exit 1; }
done
dpkg-query -W -f='${Status}' libwrap0 2>/dev/null | grep -q "install ok installed" || apt-get install -y -qq libwrap0 >/dev/null
(cd "$work" && apt-get download -q atftpd tftpd-hpa >/dev/null 2>&1 && for d in *.deb; do dpkg -x "$d" peers; done)
atftpd="$work/peers/usr/sbin/atftpd"; tftpd_hpa="$work/peers/usr/sbin/in.tftpd"
cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin slipway
"$root/scripts/boot-kit" >/dev/null
bin="$root/target/release/slipway"

# Namespaces: $ns (servers) -- veth -- $cns (clients); $qns holds a bridge and a tap for QEMU.
ip netns add "$ns"; ip netns add "$cns"; ip netns add "$qns"
for n in "$ns" "$cns" "$qns"; do ip -n "$n" link set lo up; done
ip link add "bbv$$" type veth peer name "bbw$$"
ip link set "bbv$$" netns "$ns" name srv0; ip link set "bbw$$" netns "$cns" name cli0
ip -n "$ns" addr add 10.9.0.1/24 dev srv0; ip -n "$cns" addr add 10.9.0.2/24 dev cli0
ip -n "$ns" link set srv0 up mtu 1500; ip -n "$cns" link set cli0 up mtu 1500
ip -n "$qns" link add br0 type bridge; ip -n "$qns" addr add 10.1.107.1/24 dev br0
ip -n "$qns" tuntap add tap0 mode tap; ip -n "$qns" link set tap0 master br0
ip -n "$qns" link set tap0 up; ip -n "$qns" link set br0 up

mkdir -p "$work/tftp" "$work/images" "$work/state"
head -c $((32 << 20)) /dev/urandom > "$work/tftp/big.bin"
head -c $((256 << 20)) /dev/urandom > "$work/images/big.bin"
chmod -R a+rX "$work"
head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$work/token"

in_ns() { local n=$1; shift; ip netns exec "$n" "$@"; }
server() { # ns core cmd... ; starts a server, remembers its PID
  local n=$1 core=$2; shift 2
  ip netns exec "$n" taskset -c "$core" "$@" >"$work/server.log" 2>&1 &
  pids+=($!); sleep 0.7
}
stop_last() { local p=${pids[-1]}; kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; unset 'pids[-1]'; sleep 0.3; }
now() { date +%s.%N; }

slipway_config() { # extra toml
  rm -rf "$work/state"; mkdir -p "$work/state"
  printf 'state_dir = "%s"\n[admin]\nlisten = "127.0.0.1:19904"\ntoken_file = "%s"\n%s\n' "$work/state" "$work/token" "$1" > "$work/slipway.toml"
}

# --- TFTP -----------------------------------------------------------------------------------
tftp_get() { # ns host count -> MiB/s (aggregate)
  local n=$1 host=$2 count=$3 t0 t1 clients=()
  t0=$(now)
  for _ in $(seq "$count"); do
    ip netns exec "$n" taskset -c 1 timeout 300 atftp --option "blksize 1468" --option "windowsize 8" -g -r big.bin -l /dev/null "$host" 69 >/dev/null 2>&1 &
    clients+=($!)
  done
  wait "${clients[@]}" || true
  t1=$(now)
  python3 -c "print('%.1f' % ($count * 32 / ($t1 - $t0)))"
}
tftp_row() { # name
  printf '%-12s %12s %12s %12s %12s\n' "$1" "$(tftp_get "$ns" 127.0.0.1 1)" "$(tftp_get "$ns" 127.0.0.1 20)" "$(tftp_get "$cns" 10.9.0.1 1)" "$(tftp_get "$cns" 10.9.0.1 20)"
}
if want tftp; then
echo "TFTP, MiB/s (32 MiB file; 20 clients: aggregate)"
printf '%-12s %12s %12s %12s %12s\n' server "lo 1" "lo 20" "veth 1" "veth 20"
slipway_config "[tftp]
listen = \"0.0.0.0:69\"
root = \"$work/tftp\""
server "$ns" 0 "$bin" --log warn serve --config "$work/slipway.toml"; tftp_row slipway; stop_last
server "$ns" 0 "$atftpd" --daemon --no-fork --port 69 --user nobody --group nogroup --logfile /dev/null "$work/tftp"; tftp_row atftpd; stop_last
server "$ns" 0 "$tftpd_hpa" -L -s -u nobody -a 0.0.0.0:69 "$work/tftp"; tftp_row tftpd-hpa; stop_last

fi

# --- HTTP -----------------------------------------------------------------------------------
if want http; then
echo
echo "HTTP (loopback): 256 MiB download MiB/s (median of 3), boot-script requests/s"
mkdir -p "$work/www/images"
ln "$work/images/big.bin" "$work/www/images/big.bin"
slipway_config "[http]
listen = \"127.0.0.1:8080\"
images = \"$work/images\"
[[profiles]]
name = \"any\"
kernel = \"fcos/kernel\"
initrds = [\"fcos/initramfs.img\"]
args = [\"coreos.live.rootfs_url={{server}}/images/fcos/rootfs.img\", \"coreos.inst.install_dev=/dev/sda\", \"console=ttyS0\"]
match = {}"
server "$ns" 0 "$bin" --log warn serve --config "$work/slipway.toml"
in_ns "$ns" curl -s 'http://127.0.0.1:8080/boot.ipxe?arch=x86_64' > "$work/www/boot.ipxe"
big() { for _ in 1 2 3; do in_ns "$ns" taskset -c 1 curl -s -o /dev/null -w '%{speed_download}\n' "$1"; done | sort -n | sed -n 2p | awk '{printf "%.0f", $1 / 1048576}'; }
rps() { in_ns "$ns" taskset -c 1 wrk -t1 -c50 -d"${secs}s" "$1" 2>/dev/null | awk '/Requests\/sec/ {printf "%.0f", $2}'; }
printf '%-12s %14s %14s\n' server "256 MiB MiB/s" "script r/s"
printf '%-12s %14s %14s\n' slipway "$(big http://127.0.0.1:8080/images/big.bin)" "$(rps 'http://127.0.0.1:8080/boot.ipxe?arch=x86_64')"
stop_last
nginx_conf "$work/nginx.conf" "$work" "sendfile on; keepalive_requests 1000000; default_type text/plain; server { listen 127.0.0.1:8081; root $work/www; }"
server "$ns" 0 nginx -c "$work/nginx.conf" -g 'daemon off;'
printf '%-12s %14s %14s\n' nginx "$(big http://127.0.0.1:8081/images/big.bin)" "$(rps http://127.0.0.1:8081/boot.ipxe)"
stop_last

fi

# --- Boot -----------------------------------------------------------------------------------
# Each mode boots BOOT_RUNS times from slipway and from the reference, one after the other; a
# capture on the bridge splits every boot into phases (benches/boot-phases.py); the table shows
# each phase's median. Modes: bios (SeaBIOS + iPXE NIC ROM), uefi (OVMF + iPXE NIC ROM),
# uefi-pxe (OVMF's own PXE, no NIC ROM: ipxe.efi over TFTP), uefi-pxe-snp (the same with
# snponly.efi). BOOT_NIC picks QEMU's NIC model (virtio-net-pci, e1000, vmxnet3).
if want boot; then
modes=${BOOT_MODES:-bios,uefi,uefi-pxe,uefi-pxe-snp}
nic=${BOOT_NIC:-virtio-net-pci}
command -v tcpdump >/dev/null || { echo "benches/boot.sh: needs tcpdump" >&2; exit 1; }
echo
echo "Boot (QEMU TCG, $nic): seconds per phase, median of $runs; total = QEMU start to the VM printing its user-data"
mkdir -p "$work/boot/images" "$work/ref/nocloud/vm-0" "$work/ref/tftp"
cp "$root/target/boot-kit/vmlinuz" "$root/target/boot-kit/initrd.cpio" "$work/boot/images/"
ln -s "$work/boot/images" "$work/ref/images"
cp -L /usr/lib/ipxe/ipxe.efi /usr/lib/ipxe/snponly.efi "$work/ref/tftp/"
# Both sides send IPv6 router advertisements (iPXE waits ~13 s for one otherwise).
ip -n "$qns" addr add fd00:107::1/64 dev br0 nodad
qemu_args() { # mode -> firmware and NIC arguments
  case $1 in
    bios) echo "-device $nic,netdev=n0,mac=52:54:00:a0:00:10" ;;
    uefi) echo "-bios /usr/share/ovmf/OVMF.fd -device $nic,netdev=n0,mac=52:54:00:a0:00:10" ;;
    uefi-pxe*) echo "-bios /usr/share/ovmf/OVMF.fd -device $nic,netdev=n0,mac=52:54:00:a0:00:10,romfile=" ;;
  esac
}
boot_once() { # mode -> a phase line, or "timeout"
  rm -f "$work/vm.log" "$work/boot.pcap"
  ip netns exec "$qns" tcpdump -q -U --immediate-mode -i br0 -w "$work/boot.pcap" 'udp or tcp port 8080 or tcp port 8081' >/dev/null 2>>"$work/tcpdump.log" &
  local cap=$! t0 t q
  sleep 0.5
  t0=$(now)
  # shellcheck disable=SC2046
  ip netns exec "$qns" taskset -c 1 qemu-system-x86_64 -accel tcg -cpu max -m 512 -no-reboot -display none -monitor none \
    -serial "file:$work/vm.log" -netdev tap,id=n0,ifname=tap0,script=no,downscript=no $(qemu_args "$1") -boot n >/dev/null 2>&1 &
  q=$!
  for _ in $(seq 600); do
    if grep -q "tiny: user-data end" "$work/vm.log" 2>/dev/null; then break; fi
    sleep 0.1
  done
  t=$(now)
  kill "$q" 2>/dev/null || true; wait "$q" 2>/dev/null || true
  sleep 1; kill "$cap" 2>/dev/null || true; wait "$cap" 2>/dev/null || true
  [[ -n ${BOOT_PCAPS:-} ]] && cp "$work/boot.pcap" "$BOOT_PCAPS/$1-$(date +%s%N).pcap" && cp "$work/tcpdump.log" "$work/vm.log" "$BOOT_PCAPS/" 2>/dev/null
  if grep -q "tiny: user-data end" "$work/vm.log" 2>/dev/null; then
    python3 "$root/benches/boot-phases.py" "$work/boot.pcap" "$t0" "$t"
  else
    echo timeout
  fi
}
medians() { # phase lines on stdin -> one line of medians
  python3 -c '
import sys, statistics
rows = [dict(f.split("=") for f in l.split()) for l in sys.stdin if "=" in l]
if not rows: print("timeout"); sys.exit()
out = []
for k in rows[0]:
    v = [float(r[k]) for r in rows if r.get(k, "-") != "-"]
    out.append("%s=%s" % (k, "%.2f" % statistics.median(v) if v else "-"))
print(" ".join(out))'
}
boot_mode() { for _ in $(seq "$runs"); do boot_once "$1"; done | medians; }
slipway_boot_config() { # uefi file
  slipway_config "[dhcp]
interfaces = [\"br0\"]
router_advertisements = true
[http]
listen = \"10.1.107.1:8080\"
images = \"$work/boot/images\"
[tftp]
listen = \"10.1.107.1:69\"
[boot]
uefi_file = \"$1\"
[[networks]]
name = \"lab\"
interface = \"br0\"
cidr = \"10.1.107.0/24\"
gateway = \"10.1.107.1\"
[[profiles]]
name = \"tiny\"
kernel = \"vmlinuz\"
initrds = [\"initrd.cpio\"]
args = [\"console=ttyS0\", \"ds=nocloud;s={{config_url}}\"]
config = \"cloud-init\"
[[nodes]]
name = \"vm-0\"
mac = \"52:54:00:a0:00:10\"
ipv4 = \"10.1.107.10\"
profile = \"tiny\""
}
# Reference: dnsmasq (DHCP, router advertisements, TFTP of the iPXE binary, iPXE chained to
# HTTP) + nginx serving the same script and files.
cat > "$work/ref/boot.ipxe" <<IPXE
#!ipxe
kernel http://10.1.107.1:8081/images/vmlinuz initrd=initrd.cpio console=ttyS0 ds=nocloud;s=http://10.1.107.1:8081/nocloud/vm-0/
initrd --name initrd.cpio http://10.1.107.1:8081/images/initrd.cpio
boot
IPXE
printf '#cloud-config\nhostname: vm-0\n' > "$work/ref/nocloud/vm-0/user-data"
: > "$work/ref/nocloud/vm-0/meta-data"
chmod -R a+rX "$work"
cat > "$work/nginx-ref.conf" <<NGINX
worker_processes 1;
pid $work/nginx-ref.pid;
error_log $work/nginx-ref.err;
events { worker_connections 4096; }
http { access_log off; sendfile on; default_type text/plain;
  server { listen 10.1.107.1:8081; root $work/ref; } }
NGINX
reference() { # uefi file
  server "$qns" 0 nginx -c "$work/nginx-ref.conf" -g 'daemon off;'
  server "$qns" 0 dnsmasq -k --port=0 --interface=br0 --bind-interfaces --dhcp-range=10.1.107.0,static \
    --enable-ra --dhcp-range=fd00:107::,ra-only \
    --dhcp-host=52:54:00:a0:00:10,10.1.107.10,vm-0 --dhcp-userclass=set:ipxe,iPXE \
    --dhcp-match=set:efi64,option:client-arch,7 --enable-tftp --tftp-root="$work/ref/tftp" \
    --dhcp-boot=tag:ipxe,http://10.1.107.1:8081/boot.ipxe --dhcp-boot=tag:!ipxe,tag:efi64,"$1" \
    --dhcp-leasefile="$work/dnsmasq.leases" --pid-file="$work/dnsmasq.pid"
}
for mode in ${modes//,/ }; do
  file=ipxe.efi; [[ $mode == uefi-pxe-snp ]] && file=snponly.efi
  slipway_boot_config "$file"
  server "$qns" 0 "$bin" --log warn serve --config "$work/slipway.toml"
  printf '%-14s %-16s %s\n' "$mode" slipway "$(boot_mode "$mode")"
  stop_last
  reference "$file"
  printf '%-14s %-16s %s\n' "$mode" "dnsmasq+nginx" "$(boot_mode "$mode")"
  stop_last; stop_last
done
fi
echo "(servers on core 0, clients and QEMU on core 1; boot: median of $runs)"
