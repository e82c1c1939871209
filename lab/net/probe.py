#!/usr/bin/env python3
"""The client in the virtual IP tests, run in its own network namespace.

Every INTERVAL it connects to VIP:PORT and records who answered; and it asks the link who
has VIP (an ARP request) and records every MAC that replies within the wait. One JSON line
per probe on stdout: {"t": ns, "answer": name|null, "macs": [..]}. Two MACs replying to one
request means two nodes hold the address at once."""
import json
import socket
import struct
import sys
import time

iface, vip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
interval = float(sys.argv[4]) if len(sys.argv) > 4 else 0.05

raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x0806))
raw.bind((iface, 0))
raw.setblocking(False)
my_mac = raw.getsockname()[4]
with open(f"/sys/class/net/{iface}/address") as f:
    my_mac = bytes.fromhex(f.read().strip().replace(":", ""))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect(("192.0.2.1", 9))
my_ip = socket.inet_aton(s.getsockname()[0])
s.close()
vip_b = socket.inet_aton(vip)
request = (b"\xff" * 6 + my_mac + b"\x08\x06"
           + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1)
           + my_mac + my_ip + b"\x00" * 6 + vip_b)


def arp_macs(wait):
    try:
        while raw.recv(2048):
            pass
    except BlockingIOError:
        pass
    raw.send(request)
    macs = set()
    end = time.monotonic() + wait
    while time.monotonic() < end:
        try:
            frame = raw.recv(2048)
        except BlockingIOError:
            time.sleep(0.002)
            continue
        if len(frame) >= 42 and frame[12:14] == b"\x08\x06":
            op = struct.unpack("!H", frame[20:22])[0]
            if op == 2 and frame[28:32] == vip_b:
                macs.add(frame[22:28].hex(":"))
    return sorted(macs)


while True:
    t = time.time_ns()
    answer = None
    try:
        with socket.create_connection((vip, port), timeout=0.2) as c:
            c.settimeout(0.2)
            answer = c.recv(64).decode().strip() or None
    except OSError:
        pass
    macs = arp_macs(0.03)
    print(json.dumps({"t": t, "answer": answer, "macs": macs}), flush=True)
    time.sleep(interval)
