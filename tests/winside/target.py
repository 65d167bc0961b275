"""A Windows target for the Wine tests: holds a unique marker in memory and says where.

Prints one JSON line {pid, marker, address}, then obeys stdin: `exit CODE` exits at once,
`exit-after SECONDS` exits after a delay, `ping` answers `pong`, end of input exits 0.
"""
import ctypes
import json
import os
import sys
import threading
import uuid

marker = f"DUMPLIB-MARKER-{uuid.uuid4().hex}"
# 1 MiB of private memory starting with the marker: present in a full dump, absent from a mini one.
block = ctypes.create_string_buffer(1 << 20)
block.value = marker.encode()
print(json.dumps({"pid": os.getpid(), "marker": marker, "address": ctypes.addressof(block)}), flush=True)

for line in sys.stdin:
    words = line.split()
    if not words:
        continue
    if words[0] == "exit":
        os._exit(int(words[1]) if len(words) > 1 else 0)
    if words[0] == "ping":
        print("pong", flush=True)
    if words[0] == "exit-after":
        threading.Timer(float(words[1]), os._exit, args=(3,)).start()
        print("ok", flush=True)
os._exit(0)
