#!/usr/bin/python3 -S
"""One storm client's HTTP side: fetch each URL in turn (a new connection per file, as iPXE
does) and discard the body in the kernel (recv with MSG_TRUNC: the bytes are counted, not
copied), so that a hundred clients on one core cost far less than the servers they load.
Prints the total body bytes; exits non-zero on any error or a short body.

    storm-fetch.py HOST PORT PATH...
"""
import socket
import sys

CHUNK = 1 << 22


def fetch(host, port, path):
    with socket.create_connection((host, port), timeout=300) as sock:
        sock.sendall(b"GET /%s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        head = b""
        while b"\r\n\r\n" not in head:
            got = sock.recv(4096)
            if not got:
                raise OSError("%s: connection closed in the response head" % path)
            head += got
        head, body = head.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        status = lines[0].split()
        if len(status) < 2 or status[1] != b"200":
            raise OSError("%s: %s" % (path, lines[0].decode(errors="replace")))
        length = None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        total = len(body)
        buf = bytearray(CHUNK)  # never written: MSG_TRUNC discards in the kernel
        while length is None or total < length:
            got = sock.recv_into(buf, CHUNK, socket.MSG_TRUNC)
            if got == 0:
                break
            total += got
        if length is not None and total != length:
            raise OSError("%s: %d of %d bytes" % (path, total, length))
        return total


def main():
    host, port, paths = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
    try:
        print(sum(fetch(host, port, path) for path in paths))
    except (OSError, ValueError) as err:
        print(err, file=sys.stderr)
        sys.exit(1)


main()
