"""A FUSE file system whose reads stall: a 64 MiB file "big" whose first page is served and every other
read held, a 64 KiB file "cold" whose every read is held, and (with FUSESTALL_EXE=PATH in the
environment) an executable "exe" holding PATH's bytes, served until SIGUSR2 freezes it.

Speaks the kernel's FUSE protocol on /dev/fuse directly (no libfuse, nothing to install): root mounts
it with mount(2). Run as a process of its own:

    python3 fusestall.py MOUNTPOINT      prints "ready" once mounted, then serves

SIGUSR1 releases every held read (and every later one is answered at once). SIGUSR2 freezes "exe": its
pages are dropped from the page cache (FUSE_NOTIFY_INVAL_INODE, which unmaps them from every process)
and its later reads are held. The file's page N holds
the bytes b"FUSEPAGE%08d" repeated, so a reader can tell a served page from zeros. Killing the
daemon closes /dev/fuse, which aborts the connection: held reads then fail with ENOTCONN. The mount
is detached (MNT_DETACH) when the daemon ends.
"""
from __future__ import annotations

import ctypes
import errno
import os
import select
import signal
import struct
import sys

FILE_NAME = b"big"
FILE_SIZE = 64 << 20
COLD_NAME = b"cold"
COLD_SIZE = 64 << 10
PAGE = 4096
ROOT, FILE_NODE, COLD_NODE, EXE_NODE = 1, 2, 3, 4
EXE_NAME = b"exe"
EXE_BYTES = open(os.environ["FUSESTALL_EXE"], "rb").read() if os.environ.get("FUSESTALL_EXE") else b""
SIZES = {FILE_NODE: FILE_SIZE, COLD_NODE: COLD_SIZE, EXE_NODE: len(EXE_BYTES)}
NOTIFY_INVAL_INODE = 2

LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE, FLUSH = 1, 2, 3, 14, 15, 17, 18, 25
INIT, OPENDIR, READDIR, RELEASEDIR, ACCESS, INTERRUPT, DESTROY, BATCH_FORGET = 26, 27, 28, 29, 34, 36, 38, 42
NO_REPLY = (FORGET, BATCH_FORGET, INTERRUPT)
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, extlen, padding
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique


def page_bytes(n: int) -> bytes:
    """What page *n* of the file holds."""
    unit = b"FUSEPAGE%08d" % n
    return (unit * (PAGE // len(unit) + 1))[:PAGE]


def _attr(node: int) -> bytes:
    if node == ROOT:
        mode, size, nlink = 0o040755, 0, 2
    else:
        mode, size, nlink = 0o100555 if node == EXE_NODE else 0o100444, SIZES[node], 1
    # ino size blocks atime mtime ctime, atimensec mtimensec ctimensec mode nlink uid gid rdev blksize flags
    return struct.pack("<QQQQQQIIIIIIIIII", node, size, size // 512, 0, 0, 0, 0, 0, 0, mode, nlink, 0, 0, 0,
                       PAGE, 0)


def _owners(tid: int) -> str:
    """The process of thread *tid* and its parent ("tgid=N ppid=M"), as the log names who asked."""
    try:
        with open(f"/proc/{tid}/status") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line)
        return f"tgid={fields['Tgid'].strip()} ppid={fields['PPid'].strip()}"
    except (OSError, KeyError):
        return "tgid=? ppid=?"


class Daemon:
    def __init__(self, mountpoint: str) -> None:
        self.fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        self.mountpoint = mountpoint
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mount.argtypes = [ctypes.c_char_p] * 3 + [ctypes.c_ulong, ctypes.c_char_p]
        opts = f"fd={self.fd},rootmode=40000,user_id=0,group_id=0,allow_other".encode()
        if libc.mount(b"fusestall", mountpoint.encode(), b"fuse.fusestall", 0x2 | 0x4, opts) != 0:  # NOSUID|NODEV
            err = ctypes.get_errno()
            raise OSError(err, f"mount fuse at {mountpoint}: {os.strerror(err)}")
        self.libc = libc
        self.held: list = []  # (unique, node, offset, size) of reads not answered yet
        self.released = False
        self.frozen = False

    def reply(self, unique: int, body: bytes = b"", error: int = 0) -> None:
        try:
            os.write(self.fd, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # ENOENT: the request was interrupted meanwhile
                raise

    def answer_read(self, unique: int, node: int, offset: int, size: int) -> None:
        if node == EXE_NODE:
            self.reply(unique, EXE_BYTES[offset : offset + size])
            return
        end = min(SIZES.get(node, 0), offset + size)
        data = b"".join(page_bytes(p) for p in range(offset // PAGE, -(-end // PAGE)))
        skip = offset % PAGE
        self.reply(unique, data[skip : skip + max(0, end - offset)])

    def handle(self, msg: bytes) -> None:
        _, opcode, unique, node, _, _, pid, _, _ = IN_HEADER.unpack_from(msg)
        print(f"request {opcode} from {pid} {_owners(pid)}", file=sys.stderr, flush=True)
        body = msg[IN_HEADER.size :]
        if opcode in NO_REPLY:
            return
        if opcode == INIT:
            major, minor, readahead, flags = struct.unpack_from("<IIII", body)
            # max_readahead 0: a fault reads its own page only, so one touch makes one page resident.
            out = struct.pack("<IIIIHHIIHHII", 7, 31, 0, 0, 1, 1, 65536, 1, 16, 0, 0, 0) + bytes(24)
            self.reply(unique, out)
        elif opcode == LOOKUP:
            name = body.rstrip(b"\0")
            found = {FILE_NAME: FILE_NODE, COLD_NAME: COLD_NODE, EXE_NAME: EXE_NODE}.get(name) if node == ROOT else None
            found = None if found == EXE_NODE and not EXE_BYTES else found
            if found:
                self.reply(unique, struct.pack("<QQQQII", found, 0, 3600, 3600, 0, 0) + _attr(found))
            else:
                self.reply(unique, error=errno.ENOENT)
        elif opcode == GETATTR:
            self.reply(unique, struct.pack("<QII", 3600, 0, 0) + _attr(node))
        elif opcode in (OPEN, OPENDIR):
            # FOPEN_KEEP_CACHE: another open must not drop the page cache (and so the target's resident page).
            self.reply(unique, struct.pack("<QII", 1, 2, 0))
        elif opcode == READ:
            _, offset, size = struct.unpack_from("<QQI", body)
            if (offset < PAGE and node == FILE_NODE) or (node == EXE_NODE and not self.frozen) or self.released:
                self.answer_read(unique, node, offset, size)
            else:
                self.held.append((unique, node, offset, size))
                print(f"held read of node {node} at {offset} from {pid}", file=sys.stderr, flush=True)
        elif opcode == READDIR:
            self.reply(unique)
        elif opcode in (RELEASE, RELEASEDIR, FLUSH, ACCESS, DESTROY):
            self.reply(unique)
        elif opcode == STATFS:
            self.reply(unique, struct.pack("<QQQQQIIII", 1, 0, 0, 2, 0, PAGE, 255, PAGE, 0) + bytes(24))
        else:
            self.reply(unique, error=errno.ENOSYS)

    def freeze(self) -> None:
        self.frozen = True
        notice = OUT_HEADER.pack(OUT_HEADER.size + 24, NOTIFY_INVAL_INODE, 0) + struct.pack("<Qqq", EXE_NODE, 0, 0)
        try:
            os.write(self.fd, notice)
        except FileNotFoundError:  # the kernel holds no inode of it: nothing is cached
            pass
        print("frozen", file=sys.stderr, flush=True)

    def release(self) -> None:
        self.released = True
        held, self.held = self.held, []
        for unique, node, offset, size in held:
            self.answer_read(unique, node, offset, size)

    def serve(self) -> None:
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGUSR1, lambda *_: None)
        signal.signal(signal.SIGUSR2, lambda *_: None)
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        print("ready", flush=True)
        while True:
            ready, _, _ = select.select([self.fd, wake_r], [], [])
            if wake_r in ready:
                woken = os.read(wake_r, 64)
                if signal.SIGUSR2 in woken:
                    self.freeze()
                if signal.SIGUSR1 in woken:
                    self.release()
            if self.fd in ready:
                try:
                    msg = os.read(self.fd, 65536 + 8192)
                except OSError as exc:
                    if exc.errno in (errno.EINTR, errno.ENOENT, errno.EAGAIN):
                        continue
                    if exc.errno == errno.ENODEV:  # unmounted
                        return
                    raise
                self.handle(msg)

    def close(self) -> None:
        self.libc.umount2(self.mountpoint.encode(), 2)  # MNT_DETACH
        os.close(self.fd)


def main() -> None:
    daemon = Daemon(sys.argv[1])
    try:
        daemon.serve()
    finally:
        daemon.close()


if __name__ == "__main__":
    main()
