#!/usr/bin/env python3
"""A node's workload in the virtual IP tests: answers every TCP connection on PORT with
NAME, and on SIGTERM writes the time it stopped (ns since the epoch) to STOPPED_FILE."""
import signal
import socket
import sys
import time

name, port, stopped_file = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def stop(*_):
    with open(stopped_file, "w") as f:
        f.write(str(time.time_ns()))
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", port))
s.listen(64)
while True:
    conn, _ = s.accept()
    try:
        conn.sendall(name.encode() + b"\n")
    except OSError:
        pass
    conn.close()
