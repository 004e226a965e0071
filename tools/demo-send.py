#!/usr/bin/python3
"""demo-send.py PORT FILE... - sends each file as one message with python3-hl7's
MLLP client and prints the acknowledgement, one segment per line."""
import sys

import hl7.client

port = int(sys.argv[1])
for path in sys.argv[2:]:
    with open(path, "rb") as f:
        message = f.read().rstrip(b"\r\n") + b"\r"
    with hl7.client.MLLPClient("127.0.0.1", port) as client:
        client.socket.settimeout(10)
        ack = client.send_message(message)
    print("== %s  ->  ACK:" % path.rsplit("/", 1)[-1])
    for seg in ack.strip(b"\x0b\x1c\r\n").split(b"\r"):
        print("   " + seg.decode("utf-8", "replace"))
