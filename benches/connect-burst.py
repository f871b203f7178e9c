#!/usr/bin/python3
"""A burst of TCP connections: N clients (from 50 loopback source addresses) connect to
HOST:PORT as fast as one thread can, and hold them; then each sends one request and reads the
first bytes of its answer. Prints the time the connects took and the time the requests took.
Bounded: N (default 2000) connections, a 30 s timeout on each step.

    benches/connect-burst.py PORT [N] [REQUEST-PATH]
"""
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = 24


def main():
    port = int(sys.argv[1])
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    path = sys.argv[3] if len(sys.argv) > 3 else "/healthz"
    per = max(1, count // 50)
    socks = []
    started = time.time()
    for i in range(count):
        s = socket.socket()
        s.settimeout(30)
        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind(("127.0.1.%d" % (1 + i // per), 0))
        s.connect(("127.0.0.1", port))
        socks.append(s)
    connected = time.time() - started
    started = time.time()
    request = ("GET %s HTTP/1.1\r\nHost: bench\r\n\r\n" % path).encode()
    for s in socks:
        s.sendall(request)
    for s in socks:
        s.recv(4096)
    answered = time.time() - started
    print("%d connects %.3f s, %d requests answered %.3f s" % (count, connected, count, answered))


main()
