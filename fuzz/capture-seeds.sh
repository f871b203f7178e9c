#!/usr/bin/env bash
# Captures fuzz seeds from REAL clients: every byte under fuzz/seeds/{dhcp_decide,dns_answer,
# tftp_packet,tftp_name,http_head} was sent by an unmodified client program (dhclient, busybox
# udhcpc, dhcpcd, dig, kdig, tftp-hpa, atftp, busybox tftp, curl, wget, busybox wget); none is
# written by hand. Only the clients' command lines (names, options, MACs) are chosen here.
#
#   dhcp_decide/  DHCPv4 UDP payloads, captured with tcpdump on a veth between two network
#                 namespaces made here. A tiny responder in the server namespace answers DISCOVER
#                 with OFFER and REQUEST with ACK so the clients also send REQUESTs (the
#                 responder's own packets are not saved).
#   dns_answer/   DNS queries sent by dig and kdig to a UDP listener on 127.0.0.1 (no answer).
#   tftp_packet/  TFTP RRQ/WRQ packets sent to a UDP listener on 127.0.0.1 (which answers ERROR
#                 so the clients stop at once).
#   tftp_name/    the file names from those requests (bytes between opcode and first NUL).
#   http_head/    HTTP request heads (up to and including the blank line) sent to a TCP listener
#                 on 127.0.0.1 (which answers 404 and closes).
#
# Traffic goes only to 127.0.0.1 or inside the two namespaces made here. Run as root on Debian 12:
#   sudo bash fuzz/capture-seeds.sh
# It installs missing clients with apt-get, replaces those five seed directories wholesale (so
# put nothing hand-made in them), and removes its namespaces and listeners on exit. Re-runnable.
# SEED_CLIENT_LOG=/some/file keeps the clients' own output there.
set -euo pipefail

if [[ $EUID -ne 0 ]]; then
    echo "capture-seeds.sh: run as root (it makes network namespaces and runs tcpdump)" >&2
    exit 1
fi

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SEEDS=$HERE/seeds
DIRS=(dhcp_decide dns_answer tftp_packet tftp_name http_head)

NS_SRV=slipseed-srv
NS_CLI=slipseed-cli
VETH_SRV=slipseed0
VETH_CLI=slipseed1

# Never let a client reach a proxy: every request below goes to 127.0.0.1 only.
unset http_proxy https_proxy HTTP_PROXY HTTPS_PROXY all_proxy ALL_PROXY ftp_proxy FTP_PROXY no_proxy NO_PROXY

# --- tools -----------------------------------------------------------------------------------
need=()
have() { command -v "$1" >/dev/null 2>&1; }
have tcpdump || need+=(tcpdump)
have dhclient || need+=(isc-dhcp-client)
have dhcpcd || need+=(dhcpcd-base)
have dig || need+=(dnsutils)
have kdig || need+=(knot-dnsutils)
{ have tftp && timeout 5 tftp -V </dev/null 2>&1 | grep -q tftp-hpa; } || need+=(tftp-hpa)
have atftp || need+=(atftp)
have curl || need+=(curl)
have wget || need+=(wget)
have python3 || need+=(python3)
have busybox || need+=(busybox-static)
have udhcpc || need+=(udhcpc)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    timeout 600 apt-get install -y -q --no-install-recommends "${need[@]}" ||
        { timeout 300 apt-get update -q && timeout 600 apt-get install -y -q --no-install-recommends "${need[@]}"; }
fi
PY=$(python3 -c 'import sys; print(sys.executable)')

# --- work area, cleanup ----------------------------------------------------------------------
WORK=$(mktemp -d /tmp/slipway-seeds.XXXXXX)
STAGE=$WORK/seeds
for d in "${DIRS[@]}"; do mkdir -p "$STAGE/$d"; done
LOG=$WORK/clients.log
: >"$LOG"
PIDS=()
MISSED=()

cleanup() {
    local p
    for p in "${PIDS[@]}"; do stop_pid "$p"; done
    ip netns del "$NS_CLI" 2>/dev/null || true
    ip netns del "$NS_SRV" 2>/dev/null || true
    if [[ -n ${SEED_CLIENT_LOG:-} ]]; then cp "$LOG" "$SEED_CLIENT_LOG" || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits (bounded) until file $1 is non-empty.
wait_file() { timeout "${2:-5}" bash -c "until [ -s '$1' ]; do sleep 0.1; done"; }

# Stops one process this script started (by its PID) and waits for it (bounded); forgets it.
stop_pid() {
    local p keep=()
    kill -"${2:-TERM}" "$1" 2>/dev/null || true
    timeout 5 tail --pid="$1" -f /dev/null 2>/dev/null || kill -9 "$1" 2>/dev/null || true
    for p in "${PIDS[@]}"; do
        if [[ $p != "$1" ]]; then keep+=("$p"); fi
    done
    PIDS=("${keep[@]}")
}

# --- python helpers (listeners, DHCP responder, pcap reader) ---------------------------------
cat >"$WORK/seedtool.py" <<'PYEOF'
import os, socket, struct, sys, time

def spool_writer(spool):
    n = [0]
    def save(data):
        n[0] += 1
        tmp = os.path.join(spool, ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
        os.rename(tmp, os.path.join(spool, "%06d.bin" % n[0]))
    return save

def ticks(s, portfile, lifetime, listen=False):
    """Binds s to a free loopback port, publishes the port in portfile, then yields until
    lifetime runs out, with s's timeout set to the time left."""
    s.bind(("127.0.0.1", 0))
    if listen:
        s.listen(8)
    with open(portfile + ".tmp", "w") as f:
        f.write(str(s.getsockname()[1]))
    os.rename(portfile + ".tmp", portfile)
    end = time.time() + float(lifetime)
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        yield end

def udp_listen(portfile, spool, mode, lifetime):
    """Saves every datagram to 127.0.0.1:<port> in spool/; mode 'tftp' answers ERROR 1."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    save = spool_writer(spool)
    for _ in ticks(s, portfile, lifetime):
        try:
            data, peer = s.recvfrom(65535)
        except socket.timeout:
            break
        save(data)
        if mode == "tftp":
            s.sendto(b"\x00\x05\x00\x01File not found\x00", peer)

def tcp_listen(portfile, spool, lifetime):
    """Saves each connection's request head (up to the blank line), answers 404, closes."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    save = spool_writer(spool)
    for _ in ticks(s, portfile, lifetime, listen=True):
        try:
            c, _ = s.accept()
        except socket.timeout:
            break
        c.settimeout(3)
        buf = b""
        try:
            while b"\r\n\r\n" not in buf and len(buf) < 16384:
                chunk = c.recv(4096)
                if not chunk:
                    break
                buf += chunk
        except socket.timeout:
            pass
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            save(buf[: i + 4])
            try:
                c.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
        c.close()

def dhcp_opts(p):
    opts, i = {}, 240
    while i < len(p):
        t = p[i]
        if t == 255:
            break
        if t == 0:
            i += 1
            continue
        if i + 1 >= len(p):
            break
        l = p[i + 1]
        opts.setdefault(t, p[i + 2 : i + 2 + l])
        i += 2 + l
    return opts

def dhcp_responder(ifname, readyfile, lifetime):
    """Answers DISCOVER with OFFER and REQUEST with ACK (10.1.107.0/24, server 10.1.107.1),
    broadcast on ifname only, so that real clients go on to send REQUESTs."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
    s.setsockopt(socket.SOL_SOCKET, 25, ifname.encode())  # SO_BINDTODEVICE
    s.bind(("0.0.0.0", 67))
    open(readyfile, "w").write("ready")
    server = bytes([10, 1, 107, 1])
    end = time.time() + float(lifetime)
    while time.time() < end:
        s.settimeout(max(0.1, end - time.time()))
        try:
            p, _ = s.recvfrom(4096)
        except socket.timeout:
            break
        if len(p) < 240 or p[0] != 1 or p[236:240] != b"\x63\x82\x53\x63":
            continue
        o = dhcp_opts(p)
        kind = o.get(53, b"\x00")[0]
        if kind not in (1, 3):
            continue
        want = o.get(50) or (p[12:16] if p[12:16] != b"\0\0\0\0" else None)
        yi = want if want and len(want) == 4 and want[:3] == b"\x0a\x01\x6b" else bytes([10, 1, 107, 50])
        reply = bytearray(240)
        reply[0:4] = b"\x02\x01\x06\x00"
        reply[4:8] = p[4:8]
        reply[10:12] = p[10:12]
        reply[16:20] = yi
        reply[20:24] = server
        reply[28:44] = p[28:44]
        reply[236:240] = b"\x63\x82\x53\x63"
        reply += bytes([53, 1, 2 if kind == 1 else 5, 54, 4]) + server
        reply += bytes([51, 4]) + struct.pack("!I", 3600)
        reply += bytes([1, 4, 255, 255, 255, 0, 3, 4]) + server + bytes([255])
        s.sendto(bytes(reply), ("255.255.255.255", 68))

DHCP_TYPES = {1: "discover", 2: "offer", 3: "request", 4: "decline", 5: "ack", 6: "nak", 7: "release", 8: "inform"}

def pcap_dhcp(pcap, outdir, prefix):
    """Writes the first client->server DHCP payload of each message type in pcap as
    outdir/<prefix>-<type>.bin; prints the names written."""
    data = open(pcap, "rb").read()
    if len(data) < 24:
        return
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        e = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        e = ">"
    else:
        sys.exit("%s: not a pcap file" % pcap)
    linktype = struct.unpack(e + "I", data[20:24])[0]
    if linktype != 1:
        sys.exit("%s: link type %d, want Ethernet" % (pcap, linktype))
    seen, off = set(), 24
    while off + 16 <= len(data):
        incl = struct.unpack(e + "I", data[off + 8 : off + 12])[0]
        frame = data[off + 16 : off + 16 + incl]
        off += 16 + incl
        if len(frame) < 14:
            continue
        ethertype, l3 = struct.unpack("!H", frame[12:14])[0], 14
        if ethertype == 0x8100 and len(frame) >= 18:
            ethertype, l3 = struct.unpack("!H", frame[16:18])[0], 18
        ip = frame[l3:]
        if ethertype != 0x0800 or len(ip) < 20 or ip[0] >> 4 != 4:
            continue
        ihl = (ip[0] & 15) * 4
        total = struct.unpack("!H", ip[2:4])[0]
        frag = struct.unpack("!H", ip[6:8])[0]
        if ip[9] != 17 or frag & 0x3FFF:
            continue
        udp = ip[ihl:total]
        if len(udp) < 8:
            continue
        sport, dport, ulen = struct.unpack("!HHH", udp[:6])
        if sport != 68 or dport != 67:
            continue
        payload = udp[8:ulen]
        if len(payload) < 240:
            continue
        kind = DHCP_TYPES.get(dhcp_opts(payload).get(53, b"\x00")[0], "bootp")
        if kind in seen:
            continue
        seen.add(kind)
        name = "%s-%s.bin" % (prefix, kind)
        with open(os.path.join(outdir, name), "wb") as f:
            f.write(payload)
        print(name)

def tftp_names(src, dst):
    """For each RRQ/WRQ in src/, writes its file name (opcode to first NUL) to dst/."""
    for fn in sorted(os.listdir(src)):
        p = open(os.path.join(src, fn), "rb").read()
        if len(p) < 3 or p[:2] not in (b"\x00\x01", b"\x00\x02") or b"\x00" not in p[2:]:
            continue
        name = p[2 : p.index(b"\x00", 2)]
        with open(os.path.join(dst, fn), "wb") as f:
            f.write(name)

cmd, args = sys.argv[1], sys.argv[2:]
{"udp-listen": udp_listen, "tcp-listen": tcp_listen, "dhcp-responder": dhcp_responder,
 "pcap-dhcp": pcap_dhcp, "tftp-names": tftp_names}[cmd](*args)
PYEOF
tool() { "$PY" "$WORK/seedtool.py" "$@"; }

# Keeps $1 as $2/$3.bin unless $2 already holds the same bytes.
keep() {
    local src=$1 dir=$2 name=$3 f
    for f in "$dir"/*; do
        [[ -e $f ]] || continue
        if cmp -s "$src" "$f"; then
            echo "  $name: same bytes as $(basename "$f"), not kept"
            return 0
        fi
    done
    cp "$src" "$dir/$name.bin"
    echo "  $name.bin ($(stat -c %s "$dir/$name.bin") bytes)"
}

# Starts a loopback listener (udp-listen MODE | tcp-listen) with spool dir $1; sets LPORT.
start_listener() {
    local spool=$1
    shift
    mkdir -p "$spool"
    # The interpreter itself in the background (not the shell function), so $! is its PID.
    "$PY" "$WORK/seedtool.py" "$1" "$spool.port" "$spool" "${@:2}" &
    PIDS+=($!)
    LPID=$!
    wait_file "$spool.port" || { echo "listener did not start" >&2; exit 1; }
    LPORT=$(cat "$spool.port")
}

# capture SPOOL OUTDIR NAME CMD...: runs one client, keeps the first message it sent.
capture() {
    local spool=$1 out=$2 name=$3 before f="" _
    shift 3
    before=$(find "$spool" -name '*.bin' | wc -l)
    echo "+ $(date +%T) $*" >>"$LOG"
    "$@" >>"$LOG" 2>&1 </dev/null || true
    for _ in $(seq 20); do
        f=$(find "$spool" -name '*.bin' | sort | sed -n "$((before + 1))p")
        [[ -n $f ]] && break
        sleep 0.1
    done
    if [[ -z $f ]]; then
        echo "  $name: NOTHING RECEIVED"
        MISSED+=("$name")
        return 0
    fi
    keep "$f" "$out" "$name"
}

# --- DHCP: two namespaces joined by a veth, tcpdump on the server side ------------------------
echo "== DHCP (namespaces $NS_SRV / $NS_CLI)"
ip netns del "$NS_CLI" 2>/dev/null || true
ip netns del "$NS_SRV" 2>/dev/null || true
ip netns add "$NS_SRV"
ip netns add "$NS_CLI"
ip link add "$VETH_SRV" netns "$NS_SRV" type veth peer name "$VETH_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" link set lo up
ip -n "$NS_CLI" link set lo up
ip -n "$NS_SRV" addr add 10.1.107.1/24 dev "$VETH_SRV"
ip -n "$NS_SRV" link set "$VETH_SRV" up

ip netns exec "$NS_SRV" "$PY" "$WORK/seedtool.py" dhcp-responder "$VETH_SRV" "$WORK/responder.ready" 180 >>"$LOG" 2>&1 &
PIDS+=($!)
wait_file "$WORK/responder.ready" || { echo "DHCP responder did not start" >&2; exit 1; }

# Client state (leases, pid files, sockets, resolv.conf) lives in a private mount namespace
# with tmpfs over the clients' directories, so nothing on the host is touched.
cat >"$WORK/sandbox.sh" <<'EOF'
set -e
mount -t tmpfs slipseed /run
for d in /var/lib/dhcp /var/lib/dhcpcd; do
    if [ -d "$d" ]; then mount -t tmpfs slipseed "$d"; fi
done
: >"$SANDBOX_RESOLV"
mount --bind "$SANDBOX_RESOLV" /etc/resolv.conf
exec "$@"
EOF
export SANDBOX_RESOLV=$WORK/resolv.conf

# dhcp_run RUN PREFIX MAC CMD...: resets the client interface with MAC (and DHCP_ADDR, if set),
# runs CMD for DHCP_TIMEOUT (8) seconds at most, captures its packets and keeps the first of each
# message type the client sent as PREFIX-<type>.bin.
dhcp_run() {
    local run=$1 prefix=$2 mac=$3 pcap=$WORK/$1.pcap tlog=$WORK/$1.tcpdump.log tpid out
    shift 3
    ip -n "$NS_CLI" link set "$VETH_CLI" down
    ip -n "$NS_CLI" addr flush dev "$VETH_CLI"
    ip -n "$NS_CLI" link set "$VETH_CLI" address "$mac"
    ip -n "$NS_CLI" link set "$VETH_CLI" up
    if [[ -n ${DHCP_ADDR:-} ]]; then ip -n "$NS_CLI" addr add "$DHCP_ADDR" dev "$VETH_CLI"; fi
    : >"$tlog"
    ip netns exec "$NS_SRV" timeout 30 tcpdump --immediate-mode -Z root -i "$VETH_SRV" -n -U -s 0 -w "$pcap" 'udp port 67 or udp port 68' 2>"$tlog" &
    tpid=$!
    PIDS+=("$tpid")
    timeout 5 bash -c "until grep -q 'listening on' '$tlog'; do sleep 0.1; done" ||
        { echo "tcpdump did not start: $(cat "$tlog")" >&2; exit 1; }
    echo "+ $(date +%T) [$run] $*" >>"$LOG"
    ip netns exec "$NS_CLI" unshare -m bash "$WORK/sandbox.sh" timeout "${DHCP_TIMEOUT:-8}" "$@" >>"$LOG" 2>&1 </dev/null || true
    sleep 1
    stop_pid "$tpid" INT
    mkdir -p "$WORK/dhcp-$run"
    out=$(tool pcap-dhcp "$pcap" "$WORK/dhcp-$run" "$prefix")
    if [[ -z $out ]]; then
        echo "  $run: NOTHING CAPTURED"
        MISSED+=("$run")
    fi
    local f
    for f in "$WORK/dhcp-$run"/*.bin; do
        if [[ -e $f ]]; then keep "$f" "$STAGE/dhcp_decide" "$(basename "$f" .bin)"; fi
    done
}

DHCLIENT=(dhclient -4 -d -v -sf /bin/true -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" "$VETH_CLI")
# dhclient: DISCOVER + REQUEST (selecting); then, with the lease it got, INIT-REBOOT REQUEST;
# then -r sends a RELEASE of that lease (from the address the lease gave, set on the interface).
dhcp_run dhclient dhclient 52:54:00:00:00:02 "${DHCLIENT[@]}"
dhcp_run dhclient-reboot dhclient-reboot 52:54:00:00:00:02 "${DHCLIENT[@]}"
DHCP_ADDR=10.1.107.50/24 dhcp_run dhclient-release dhclient 52:54:00:00:00:02 dhclient -4 -r -v -sf /bin/true -lf "$WORK/dhclient.leases" -pf "$WORK/dhclient.pid" "$VETH_CLI"
# busybox udhcpc: plain; asking for 10.1.107.50 (option 50), then bound until timeout's SIGTERM
# makes it release (-R; the address is set on the interface beforehand, since -s /bin/true
# configures nothing, and -q would exit before it is bound); PXE-like
# (the PXE vendor class, client arch 93, NII 94, UUID 97 and boot options asked for).
UDHCPC=(udhcpc -i "$VETH_CLI" -f -n -q -t 3 -T 1 -A 1 -s /bin/true)
dhcp_run udhcpc udhcpc 52:54:00:00:00:0a "${UDHCPC[@]}"
DHCP_ADDR=10.1.107.50/24 DHCP_TIMEOUT=3 dhcp_run udhcpc-reqip udhcpc-reqip 52:54:00:00:00:0b \
    udhcpc -i "$VETH_CLI" -f -t 3 -T 1 -A 1 -s /bin/true -R -r 10.1.107.50
dhcp_run udhcpc-pxe udhcpc-pxe 52:54:00:00:00:01 "${UDHCPC[@]}" -V PXEClient:Arch:00007:UNDI:003016 \
    -x 0x5d:0007 -x 0x5e:010310 -x 0x61:00564d1a2b3c4d5e6f708192a3b4c5d6e7 -O 66 -O 67 -O 43 -O 60
# dhcpcd (its default /etc/dhcpcd.conf): DISCOVER + REQUEST; then INFORM for a static address.
dhcp_run dhcpcd dhcpcd 52:54:00:12:34:56 dhcpcd -4 -B -1 -t 6 -c /bin/true "$VETH_CLI"
dhcp_run dhcpcd-inform dhcpcd 52:54:00:12:34:57 dhcpcd -4 -B -1 -t 4 -c /bin/true --inform=10.1.107.60/24 "$VETH_CLI"

# --- DNS: dig and kdig at a UDP listener on 127.0.0.1 -----------------------------------------
echo "== DNS"
start_listener "$WORK/dns" udp-listen none 120
DNS_PID=$LPID
DIG=(timeout 5 dig @127.0.0.1 -p "$LPORT" +tries=1 +timeout=1)
KDIG=(timeout 5 kdig @127.0.0.1 -p "$LPORT" +retry=0 +timeout=1)
D=$STAGE/dns_answer
capture "$WORK/dns" "$D" dig-a "${DIG[@]}" api.prod.lab.example A
capture "$WORK/dns" "$D" dig-a-dnssec "${DIG[@]}" api.prod.lab.example A +dnssec
capture "$WORK/dns" "$D" dig-ptr "${DIG[@]}" -x 10.1.107.11
capture "$WORK/dns" "$D" dig-ptr-v6 "${DIG[@]}" -x fd00:1:107::11
capture "$WORK/dns" "$D" dig-aaaa-wildcard "${DIG[@]}" foo.apps.prod.lab.example AAAA
capture "$WORK/dns" "$D" dig-soa "${DIG[@]}" lab.example SOA
capture "$WORK/dns" "$D" dig-ns "${DIG[@]}" lab.example NS
capture "$WORK/dns" "$D" dig-norecurse "${DIG[@]}" api-int.prod.lab.example A +norecurse
capture "$WORK/dns" "$D" dig-noedns "${DIG[@]}" master-0.prod.lab.example A +noedns
capture "$WORK/dns" "$D" dig-nocookie "${DIG[@]}" bootstrap.prod.lab.example A +nocookie
capture "$WORK/dns" "$D" dig-srv "${DIG[@]}" _etcd-server-ssl._tcp.prod.lab.example SRV
capture "$WORK/dns" "$D" dig-ecs-nsid "${DIG[@]}" console-openshift-console.apps.prod.lab.example A +subnet=10.1.107.0/24 +nsid
capture "$WORK/dns" "$D" dig-any "${DIG[@]}" lab.example ANY +notcp
capture "$WORK/dns" "$D" dig-txt-bufsize "${DIG[@]}" lab.example TXT +bufsize=512 +cdflag +adflag
capture "$WORK/dns" "$D" kdig-a "${KDIG[@]}" api.prod.lab.example A
capture "$WORK/dns" "$D" kdig-ptr "${KDIG[@]}" -x 10.1.107.10
capture "$WORK/dns" "$D" kdig-cookie-dnssec "${KDIG[@]}" +cookie +dnssec api.prod.lab.example AAAA
stop_pid "$DNS_PID"

# --- TFTP: tftp-hpa, atftp, busybox tftp at a UDP listener on 127.0.0.1 -----------------------
echo "== TFTP"
start_listener "$WORK/tftp" udp-listen tftp 120
TFTP_PID=$LPID
T=$STAGE/tftp_packet
L=$WORK/local
mkdir -p "$L"
echo "seed" >"$L/upload.txt"
HPA=(timeout 5 tftp -4 127.0.0.1 "$LPORT")
capture "$WORK/tftp" "$T" tftp-hpa-undionly "${HPA[@]}" -m binary -c get undionly.kpxe "$L/a"
capture "$WORK/tftp" "$T" tftp-hpa-boot-ipxe "${HPA[@]}" -m binary -c get boot.ipxe "$L/b"
capture "$WORK/tftp" "$T" tftp-hpa-pxelinux-mac "${HPA[@]}" -m binary -c get pxelinux.cfg/01-52-54-00-12-34-56 "$L/c"
capture "$WORK/tftp" "$T" tftp-hpa-traversal "${HPA[@]}" -m binary -c get ../etc/passwd "$L/d"
capture "$WORK/tftp" "$T" tftp-hpa-netascii "${HPA[@]}" -m ascii -c get pxelinux.cfg/default "$L/e"
capture "$WORK/tftp" "$T" tftp-hpa-backslash "${HPA[@]}" -l -m binary -c get 'C:\boot\bootx64.efi' "$L/f"
capture "$WORK/tftp" "$T" tftp-hpa-wrq "${HPA[@]}" -m binary -c put "$L/upload.txt" upload.txt
capture "$WORK/tftp" "$T" atftp-options timeout 5 atftp --get -r ipxe.efi -l "$L/g" --option "blksize 1468" \
    --option "tsize 0" --option "windowsize 8" 127.0.0.1 "$LPORT"
capture "$WORK/tftp" "$T" atftp-plain timeout 5 atftp --get -r grubx64.efi -l "$L/h" 127.0.0.1 "$LPORT"
capture "$WORK/tftp" "$T" atftp-timeout timeout 5 atftp --get -r snponly.efi -l "$L/i" --option "timeout 3" \
    --option "blksize 512" 127.0.0.1 "$LPORT"
capture "$WORK/tftp" "$T" busybox-tftp-blksize timeout 5 busybox tftp -g -r pxelinux.0 -l "$L/j" -b 1468 127.0.0.1 "$LPORT"
capture "$WORK/tftp" "$T" busybox-tftp-plain timeout 5 busybox tftp -g -r ldlinux.c32 -l "$L/k" 127.0.0.1 "$LPORT"
stop_pid "$TFTP_PID"
mkdir -p "$WORK/names"
tool tftp-names "$T" "$WORK/names"
for f in "$T"/*.bin; do
    n=$(basename "$f")
    if [[ -e $WORK/names/$n ]]; then keep "$WORK/names/$n" "$STAGE/tftp_name" "${n%.bin}"; fi
done

# --- HTTP: curl, wget, busybox wget at a TCP listener on 127.0.0.1 ----------------------------
echo "== HTTP"
start_listener "$WORK/http" tcp-listen 120
HTTP_PID=$LPID
H=$STAGE/http_head
U=http://127.0.0.1:$LPORT
CURL=(timeout 5 curl -sS --noproxy '*' -m 3 -o /dev/null)
capture "$WORK/http" "$H" curl-get "${CURL[@]}" "$U/boot.ipxe"
capture "$WORK/http" "$H" curl-range "${CURL[@]}" -r 0-1023 "$U/images/coreos/kernel"
capture "$WORK/http" "$H" curl-suffix-range "${CURL[@]}" -r -512 "$U/images/coreos/initramfs.img"
capture "$WORK/http" "$H" curl-head "${CURL[@]}" -I "$U/images/coreos/rootfs.img"
capture "$WORK/http" "$H" curl-http10 "${CURL[@]}" --http1.0 "$U/boot.ipxe?mac=52:54:00:00:00:02&arch=x86_64"
capture "$WORK/http" "$H" wget-get timeout 5 wget -q --no-proxy --tries=1 -T 3 -O "$L/w1" "$U/images/coreos/kernel"
mkdir -p "$L/wc" "$L/bc"
head -c 4096 /dev/zero >"$L/wc/initramfs.img"
capture "$WORK/http" "$H" wget-continue bash -c "cd '$L/wc' && timeout 5 wget -q --no-proxy --tries=1 -T 3 -c '$U/images/coreos/initramfs.img'"
capture "$WORK/http" "$H" busybox-wget timeout 5 busybox wget -q -Y off -O "$L/w2" "$U/images/coreos/kernel"
head -c 1000 /dev/zero >"$L/bc/rootfs.img"
capture "$WORK/http" "$H" busybox-wget-continue timeout 5 busybox wget -q -Y off -c -O "$L/bc/rootfs.img" "$U/images/coreos/rootfs.img"
stop_pid "$HTTP_PID"

# --- publish ----------------------------------------------------------------------------------
for d in "${DIRS[@]}"; do
    if [[ -z $(ls -A "$STAGE/$d") ]]; then
        echo "capture-seeds.sh: no seeds captured for $d, leaving fuzz/seeds/$d as it was" >&2
        echo "client output: see below" >&2
        tail -50 "$LOG" >&2
        exit 1
    fi
done
for d in "${DIRS[@]}"; do
    rm -rf "${SEEDS:?}/$d"
    cp -r "$STAGE/$d" "$SEEDS/$d"
done

echo "== seeds"
for d in "${DIRS[@]}"; do
    printf '%-12s %2d files\n' "$d" "$(find "$SEEDS/$d" -type f | wc -l)"
done
if ((${#MISSED[@]})); then
    echo "clients that sent nothing: ${MISSED[*]}"
fi
