#!/usr/bin/env python3
"""Splits one network boot, captured on the lab bridge (tcpdump -w, classic pcap), into phases.

    boot-phases.py CAPTURE T0 [END]

T0 is the wall-clock second QEMU was started (date +%s.%N), END the second the VM printed its
user-data. Prints one line of "name=seconds" fields, each phase's duration:

  fw_dhcp     the firmware's own DHCP (PXE ROM / UEFI PXE): first DISCOVER to its ACK
  tftp        the iPXE binary over TFTP: read request to the last block
  ipxe_start  from the end of TFTP (or QEMU start when the NIC ROM is iPXE) to iPXE's DISCOVER
  ipxe_dhcp   iPXE's DHCP: DISCOVER to ACK (iPXE's user class 77 = "iPXE")
  script      the boot script: GET /boot.ipxe (or the reference's) to the kernel's GET
  kernel      kernel and initrd: the kernel's GET to the last packet of those transfers
  os_boot     from there to the booted system's first DISCOVER
  os_dhcp     the booted system's DHCP: DISCOVER to ACK
  config      from its ACK to the last packet of its config (user-data) request
  total       T0 to END

Phases that did not happen (no TFTP in a NIC-ROM boot) print "-". Pure standard library: the
capture is parsed here (Ethernet, IPv4, UDP, TCP; DHCP options), so no field names of a
particular tshark version matter.
"""

import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
        magic = struct.unpack("<I", head[:4])[0]
        order = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
        nano = magic in (0xA1B23C4D, 0x4D3CB2A1)
        while True:
            record = f.read(16)
            if len(record) < 16:
                return
            sec, frac, incl, _ = struct.unpack(order + "IIII", record)
            yield sec + frac / (1e9 if nano else 1e6), f.read(incl)


def parse(frame):
    """(proto, src, sport, dst, dport, payload) of an IPv4 UDP/TCP frame, else None."""
    if len(frame) < 34 or frame[12:14] != b"\x08\x00":
        return None
    ip = frame[14:]
    ihl = (ip[0] & 15) * 4
    proto, src, dst = ip[9], ip[12:16], ip[16:20]
    total = struct.unpack(">H", ip[2:4])[0]
    body = ip[ihl:total]
    if proto == 17 and len(body) >= 8:
        sport, dport = struct.unpack(">HH", body[:4])
        return ("udp", src, sport, dst, dport, body[8:])
    if proto == 6 and len(body) >= 20:
        sport, dport = struct.unpack(">HH", body[:4])
        offset = (body[12] >> 4) * 4
        return ("tcp", src, sport, dst, dport, body[offset:])
    return None


def dhcp(payload):
    """(xid, from the client?, message type, user class, vendor class) of a DHCP message."""
    if len(payload) < 240 or payload[236:240] != b"\x63\x82\x53\x63":
        return None
    xid = payload[4:8]
    options, i = {}, 240
    while i < len(payload) and payload[i] != 255:
        code = payload[i]
        if code == 0:
            i += 1
            continue
        if i + 1 >= len(payload):
            break
        length = payload[i + 1]
        options[code] = options.get(code, b"") + payload[i + 2 : i + 2 + length]
        i += 2 + length
    kind = options.get(53, b"\x00")[0]
    return xid, payload[0] == 1, kind, options.get(77, b""), options.get(60, b"")


DISCOVER, ACK = 1, 5


def phases(path, t0, end):
    dhcp_by_xid = {}  # xid -> {"who", "discover", "ack"}; who: the client's own messages say
    tftp_start = tftp_end = None
    requests = []  # (time, method, path, stream)
    last_in_stream = {}
    for t, frame in packets(path):
        p = parse(frame)
        if not p:
            continue
        proto, src, sport, dst, dport, payload = p
        if proto == "udp" and {sport, dport} & {67, 68}:
            m = dhcp(payload)
            if not m:
                continue
            xid, from_client, kind, user_class, vendor = m
            entry = dhcp_by_xid.setdefault(xid, {"who": None, "discover": None, "ack": None})
            if from_client and entry["who"] is None:
                if b"iPXE" in user_class:
                    entry["who"] = "ipxe"
                elif vendor.startswith(b"PXEClient"):
                    entry["who"] = "fw"
                else:
                    entry["who"] = "os"
            if kind == DISCOVER and entry["discover"] is None:
                entry["discover"] = t
            if kind == ACK and entry["ack"] is None:
                entry["ack"] = t
        elif proto == "udp" and (dport == 69 or sport == 69 or (len(payload) >= 2 and payload[:2] in (b"\x00\x03", b"\x00\x04", b"\x00\x06"))):
            if len(payload) >= 2 and payload[:2] == b"\x00\x01" and tftp_start is None:
                tftp_start = t
            if tftp_start is not None and payload[:2] in (b"\x00\x03", b"\x00\x04", b"\x00\x06"):
                tftp_end = t
        elif proto == "tcp":
            stream = tuple(sorted([(src, sport), (dst, dport)]))
            if payload:
                # The last segment that carried data (a kept-alive connection closes later).
                last_in_stream[stream] = t
            for method in (b"GET ", b"POST "):
                if payload.startswith(method):
                    path_ = payload.split(b" ", 2)[1].decode("latin-1")
                    requests.append((t, method.strip().decode(), path_, stream))

    def first(who):
        seen = [e for e in dhcp_by_xid.values() if e["who"] == who and e["discover"] is not None]
        seen.sort(key=lambda e: e["discover"])
        return seen[0] if seen else None

    def span(a, b):
        return None if a is None or b is None else b - a

    fw, ipxe, os_ = first("fw"), first("ipxe"), first("os")
    script = next((r for r in requests if r[2].endswith(".ipxe")), None)
    kernel = next((r for r in requests if "vmlinuz" in r[2]), None)
    images = [r for r in requests if "vmlinuz" in r[2] or "initrd" in r[2]]
    images_end = max((last_in_stream[r[3]] for r in images), default=None)
    if os_ and images_end:
        # The last packet of an image transfer before the system's own DHCP (a kept-alive
        # connection may carry more later).
        images_end = min(images_end, os_["discover"])
    config = [r for r in requests if "user-data" in r[2]]
    config_end = max((last_in_stream[r[3]] for r in config), default=None)
    config_from = os_["ack"] if os_ else None
    out = {
        "fw_dhcp": span(fw and fw["discover"], fw and fw["ack"]),
        "tftp": span(tftp_start, tftp_end),
        "ipxe_start": span(tftp_end if tftp_end else t0, ipxe and ipxe["discover"]),
        "ipxe_dhcp": span(ipxe and ipxe["discover"], ipxe and ipxe["ack"]),
        "script": span(script and script[0], kernel and kernel[0]),
        "kernel": span(kernel and kernel[0], images_end),
        "os_boot": span(images_end, os_ and os_["discover"]),
        "os_dhcp": span(os_ and os_["discover"], os_ and os_["ack"]),
        "config": span(config_from, config_end),
        "total": span(t0, end),
    }
    return out


def main():
    path, t0 = sys.argv[1], float(sys.argv[2])
    end = float(sys.argv[3]) if len(sys.argv) > 3 else None
    out = phases(path, t0, end)
    print(" ".join(f"{k}={'-' if v is None else f'{v:.2f}'}" for k, v in out.items()))


if __name__ == "__main__":
    main()
