"""The object stores behind URL destinations: Azure Blob Storage (``azure.py``) and S3 (``s3.py``).

Imported only when a dump goes to a URL (``api._output``): ``import dumplib`` and a local dump
never load this package, let alone an SDK (tests/unit/test_import_cost.py). Each store offers the
same few operations, each inside the logger guard (``quiet.py``) and each mapping the SDK's
exceptions to dumplib's errors from codes and statuses only (never ``str(sdk_exception)``, which can
hold a request's URL, headers or the service's answer):

- ``probe()``: credentials, container/bucket and WRITE permission, before the target is touched,
  leaving nothing a listing shows (Azure: Put Block of one byte on a never-committed
  ``.dumplib-probe-<random>`` blob; S3: CreateMultipartUpload + AbortMultipartUpload);
- ``uploader(key)``: a callable sink holding at most ``(in_flight + 1) * part`` bytes, sending parts
  (Put Block / UploadPart) on ``in_flight`` threads; ``commit(metadata)`` makes the object
  (only if absent unless overwriting), ``abort()`` leaves nothing committed;
- ``put_small(key, data)`` (the sidecar), ``delete(key)``, ``exists(key)``;
- for retention on a prefix (``retention.py``): ``listing(prefix)``, ``get_small(key)`` and
  ``delete_if(key, etag)``, a delete that happens only while the object is the one that was checked.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import hashlib
import importlib
import io
import os
import threading
import time
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from ..errors import DumpFailed, RemoteDestinationError
from ..remote import EXTRAS, RemoteTarget
from .quiet import mark_thread, quiet

MiB = 1 << 20
#: The default upload buffer: 8 MiB parts, one on the wire while the next fills (16 MiB held by
#: dumplib; the SDK reads the part in place, PartStream). Two in flight (24 MiB) measured a peak RSS of
#: 103 MiB on S3; one keeps the peak under 100 MiB (docs/egress.md has the measurements,
#: tests/e2e_linux/test_egress_memory.py asserts the bound).
DEFAULT_PART = 8 * MiB
DEFAULT_IN_FLIGHT = 1
#: Parts in flight when DUMPLIB_UPLOAD_BUFFER is 15 MiB or more (more room asked for: more throughput).
LARGE_BUFFER_IN_FLIGHT = 2
#: S3's smallest part (but the last); used for Azure blocks too.
MIN_PART = 5 * MiB
#: Longest wait for the store to acknowledge a part while the next one is full (or, at the end, for
#: the last parts): then the upload fails (upload-failed) and is aborted. Ten minutes for 8 MiB is
#: 14 KB/s: a link slower than that is not one a dump can cross.
STALL_SECONDS = 600.0
#: The variable that changes it (seconds).
STALL_VARIABLE = "DUMPLIB_UPLOAD_STALL"
#: Seconds between calls of an Uploader's *waiting* while the store is awaited (a part's slot, the last
#: parts): how soon a cancel or a watch's abandon is heard on a slow link (the disk watchdog hears the
#: same figure, and checks nothing new: nothing is written locally meanwhile). Without it
#: the last parts alone (two 8 MiB parts: ~13 s at 10 Mbit/s) outlasted a watch's 10 s patience, and a
#: Windows watch interrupted there ended with its raw scratch copy left on the disk.
WAIT_SLICE = 0.25


def stall_seconds() -> float:
    """The stall bound: STALL_SECONDS, or DUMPLIB_UPLOAD_STALL (InvalidArgument unless a number above 0)."""
    text = os.environ.get(STALL_VARIABLE, "").strip()
    if not text:
        return STALL_SECONDS
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        from ..errors import InvalidArgument

        raise InvalidArgument(f"{STALL_VARIABLE}={text!r} is not a number of seconds above 0",
                              argument=STALL_VARIABLE, value=text)
    return value


#: The variable that sets the buffer (bytes, or 64M, 1G...).
BUFFER_VARIABLE = "DUMPLIB_UPLOAD_BUFFER"


def buffer_plan(estimate: int, max_parts: int) -> Tuple[int, int]:
    """(part size, parts in flight) for a dump estimated at *estimate* bytes.

    The buffer (default 16 MiB: 8 MiB parts, one in flight; or ``DUMPLIB_UPLOAD_BUFFER``) is
    ``(in_flight + 1) * part``: with the variable, two parts in flight from 15 MiB up, else one; parts
    of at least 5 MiB. Parts grow past that only when the estimate would need more parts than the
    store allows (S3 10,000, Azure 50,000): a dump over ~70 GiB (S3) or ~350 GiB (Azure) with the
    default buffer."""
    text = os.environ.get(BUFFER_VARIABLE, "").strip()
    if text:
        total = _size(text)
        in_flight = LARGE_BUFFER_IN_FLIGHT if total >= 3 * MIN_PART else 1
        part = max(MIN_PART, total // (in_flight + 1))
    else:
        part, in_flight = DEFAULT_PART, DEFAULT_IN_FLIGHT
    needed = -(-int(estimate * 1.1) // int(max_parts * 0.9)) if estimate > 0 else 0
    return max(part, needed), in_flight


def _size(text: str) -> int:
    units = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30,
             "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}
    t = text.upper()
    unit = t.lstrip("0123456789.")
    try:
        value = int(float(t[: len(t) - len(unit)]) * units[unit.strip()])
    except (KeyError, ValueError):
        value = 0
    if value <= 0:
        from ..errors import InvalidArgument

        raise InvalidArgument(f"{BUFFER_VARIABLE}={text!r} is not a size; write it like 16M or 64M",
                              argument=BUFFER_VARIABLE, value=text)
    return value


def need(module: str, target: RemoteTarget) -> Any:
    """Import *module* of the store's extra, or RemoteDestinationError naming the pip line."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise RemoteDestinationError(
            f"dumping to {target.display()} needs the {target.store} extra: pip install '{EXTRAS[target.store]}'",
            url=target.display(), store=target.store, reason="no-extra") from None


def open_store(target: RemoteTarget) -> "Store":
    """The store *target* names, its SDK imported now (RemoteDestinationError reason no-extra without it)."""
    if target.store == "s3":
        from .s3 import S3Store

        return S3Store(target)
    from .azure import AzureStore

    return AzureStore(target)


#: Seconds a successful probe of a prefix stands for later dumps of this process (`dump --all`, a
#: watch's dumps): credentials revoked meanwhile are then found by the upload itself, which commits nothing.
PROBE_VALID = 60.0
_probed: Dict[Tuple[str, str, Optional[str], str], float] = {}
_probed_lock = threading.Lock()


def probe_once(store: "Store", prefix: str) -> None:
    """``store.probe(prefix)`` unless the same prefix of the same store passed one in the last
    PROBE_VALID seconds."""
    t = store.target
    key = (t.store, t.container, t.account_url, prefix)
    now = time.monotonic()
    with _probed_lock:
        if now - _probed.get(key, -PROBE_VALID) < PROBE_VALID:
            return
    store.probe(prefix)
    with _probed_lock:
        _probed[key] = time.monotonic()


def check_destination(url: str) -> None:
    """Probe a URL destination before a watch starts (each dump probes again, before its target is
    touched): the prefix up to its first name token must take a write."""
    from ..remote import parse_url

    target = parse_url(url)
    prefix = fixed_prefix(target.prefix)
    open_store(target.with_key(prefix)).probe(prefix)


def fixed_prefix(prefix: str) -> str:
    """The part of *prefix* before its first name token, cut back to a "directory" (``prod/{name}/`` ->
    ``prod/``). Tokens as naming finds them: whole words, so ``RAPID-team/`` holds none."""
    from ..placement import first_token_at

    found = first_token_at(prefix)
    prefix = prefix[:found] if found is not None else prefix
    return prefix[: prefix.rfind("/") + 1]


@dataclasses.dataclass(frozen=True)
class Listed:
    """An object as a listing shows it."""

    key: str
    size: int
    etag: str
    #: The sha256 the object's metadata claims, where the listing carries metadata (Azure); else None.
    sha256: Optional[str] = None


class Store:
    """One container or bucket, reached with credentials from the standard places only."""

    target: RemoteTarget
    #: Most parts one object may have.
    max_parts: int = 10_000

    def probe(self, prefix: str) -> str:
        """Prove write permission under *prefix*, leaving nothing; the probe's object name."""
        raise NotImplementedError

    def uploader(self, key: str, part: int, in_flight: int, overwrite: bool) -> "Uploader":
        raise NotImplementedError

    def put_small(self, key: str, data: bytes, overwrite: bool) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def exists(self, key: str) -> Optional[bool]:
        """Whether *key* exists; None when these credentials may not ask."""
        raise NotImplementedError

    def listing(self, prefix: str, limit: int) -> List[Listed]:
        """The objects directly under *prefix* (not in its sub-"directories"), at most *limit* of them."""
        raise NotImplementedError

    def get_small(self, key: str, limit: int) -> Optional[Tuple[bytes, str]]:
        """(the first *limit* + 1 bytes of *key*, its ETag); None when it is not there."""
        raise NotImplementedError

    def delete_if(self, key: str, etag: str) -> bool:
        """Delete *key* only while its ETag is still *etag*; False when it changed or is gone."""
        raise NotImplementedError

    def still_ours(self, listed: Listed, sha256: str) -> bool:
        """Right before a retention delete: whether the object still claims the sha256 its sidecar vouches
        for. Here (Azure) the listing carries the object's metadata: one written by someone else (or
        replaced since, which drops the metadata) claims none, and is not ours."""
        return listed.sha256 == sha256

    def classify(self, exc: BaseException) -> Tuple[str, str, Optional[str], Optional[int]]:
        """(reason, why, the store's error code, HTTP status) of an SDK exception, from codes and statuses
        only: never its text, which can hold request URLs, headers or the service's answer."""
        raise NotImplementedError

    def error(self, exc: BaseException, key: Optional[str], doing: str) -> RemoteDestinationError:
        """*exc* (an SDK exception) as RemoteDestinationError."""
        if isinstance(exc, RemoteDestinationError):
            return exc
        t = self.target
        url = t.display(key) if key else t.display(t.prefix)
        reason, why, code, status = self.classify(exc)
        return RemoteDestinationError(f"{doing} {url}: {why}" + (f" ({code})" if code else ""), url=url,
                                      store=t.store, reason=reason, service_code=code, status=status)

    @contextlib.contextmanager
    def calling(self, key: Optional[str], doing: str) -> Iterator[None]:
        """SDK calls inside the logger guard, their exceptions as RemoteDestinationError.

        The error is raised outside the handler, with no context: the SDK's exception holds the
        request (a SAS signature in its URL, headers) and must not stay reachable from ours."""
        error: Optional[RemoteDestinationError] = None
        try:
            with quiet():
                yield
        except RemoteDestinationError:
            raise
        except Exception as exc:
            error = self.error(exc, key, doing)
        if error is not None:
            error.__context__ = None
            raise error


def upload_failed(err: RemoteDestinationError, pid: Optional[int] = None) -> DumpFailed:
    """A store error after the write began: DumpFailed reason upload-failed (nothing was committed)."""
    return DumpFailed(f"{err.message}; the upload was abandoned and nothing was committed", pid=pid,
                      reason="upload-failed")


class Uploader:
    """A callable sink: bytes in, parts of *part* bytes out to ``send(index, data)`` on *in_flight*
    threads. Holds at most ``(in_flight + 1) * part`` bytes: the writer waits while *in_flight*
    parts are on the wire (the backpressure that bounds memory; without a snapshot it also keeps the
    target stopped, which --max-pause bounds). Hashes all it is given."""

    def __init__(self, store: Store, key: str, part: int, in_flight: int) -> None:
        self.store, self.key, self.part, self.in_flight = store, key, part, in_flight
        self._buf = bytearray()
        self._slots = threading.BoundedSemaphore(in_flight)
        from .pool import DaemonPool  # daemon threads: an abandoned part never holds the exit (pool.py)

        self._pool = DaemonPool(in_flight, "dumplib-upload", mark_thread)
        self._futures: List["concurrent.futures.Future[Any]"] = []
        self._index = 0
        self._sha = hashlib.sha256()
        self.size = 0
        #: Bytes the store has acknowledged (for progress).
        self.sent = 0
        self._failed: Optional[BaseException] = None
        #: Set by abort(): a copy worker the caller gave up on (a Ctrl-C during a slot's wait, on Linux)
        #: stops waiting and ticking (no progress line after "interrupted"), and sends nothing more.
        self._aborted = False
        self._stall = stall_seconds()
        #: Called (no argument) every WAIT_SLICE s while the writer waits for the store: the dump's tick
        #: (RemoteObject sets it), which raises to abandon the upload (a cancel, a watch's end).
        self.waiting: Optional[Callable[[], None]] = None

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()

    def __call__(self, data: Any) -> None:
        self._check()
        self._sha.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            room = self.part - len(self._buf)
            self._buf += view[:room]
            view = view[room:]
            if len(self._buf) >= self.part:
                self._submit()

    def _submit(self) -> None:
        data, self._buf = self._buf, bytearray()  # handed over, not copied
        # Backpressure: wait while in_flight parts are on the wire, but not for ever: the SDKs' retries
        # bound a store that stops answering, not one that trickles (each byte resets a read timeout).
        if not self._wait(lambda t: self._slots.acquire(timeout=t)):
            self._stalled()
        if self._failed is not None:
            self._slots.release()
            self._check()
        index = self._index
        self._index += 1
        self._futures.append(self._pool.submit(self._send, index, data))

    def _send(self, index: int, data: bytearray) -> Any:
        try:
            with quiet():
                result = self.send(index, data)
            self.sent += len(data)
            return result
        except BaseException as exc:
            self._failed = self._failed or exc
            raise
        finally:
            self._slots.release()

    def _wait(self, ready: Callable[[float], bool]) -> bool:
        """``ready(timeout)`` tried in WAIT_SLICE slices up to the stall bound, *waiting* called between
        them (it may raise: the caller's abandon); False when the bound passed first."""
        deadline = time.monotonic() + self._stall
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if ready(min(WAIT_SLICE, left)):
                return True
            if self._aborted:
                return False  # the caller is gone: the abandoned worker's wait ends as a stall, unheard
            if self.waiting is not None:
                self.waiting()

    def _check(self) -> None:
        if self._failed is not None:
            error = self.store.error(self._failed, self.key, "uploading to")
            error.__context__ = None
            raise error

    def _stalled(self) -> None:
        t = self.store.target
        error = RemoteDestinationError(
            f"uploading to {t.display(self.key)}: no part was acknowledged in {self._stall:g} s (the store"
            f" or the link is stalled, or slower than a {self.part >> 20} MiB part in that time; {STALL_VARIABLE}"
            " changes the bound)", url=t.display(self.key), store=t.store,
            reason="unreachable")
        self._failed = self._failed or error
        raise error

    def drain(self) -> List[Any]:
        """Send what is buffered and wait for every part; the parts' results in order."""
        if self._buf or self._index == 0:
            self._submit()

        def sent(timeout: float) -> bool:  # every part acknowledged, or one failed (no use waiting for the rest)
            return self._failed is not None or not concurrent.futures.wait(self._futures, timeout=timeout)[1]

        done = self._wait(sent)
        self._check()
        if not done:
            self._stalled()
        self._pool.shutdown(wait=True)
        return [f.result() for f in self._futures]

    def send(self, index: int, data: bytearray) -> Any:
        raise NotImplementedError

    def commit(self, parts: List[Any], metadata: Dict[str, str]) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Stop sending and leave nothing committed; never waits for a part on the wire (a stalled store
        would hold dumplib's exit for its timeouts: a part sent after this is never committed)."""
        self._aborted = True
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._buf = bytearray()


class PartStream(io.RawIOBase):
    """A part's bytes as a seekable stream, read in place (no copy of the part).

    The SDKs write bytes given whole in one send(), whose socket timeout (the connect timeout, while a
    request body goes out) then bounds the whole part: on a slow link every try of a part slower than
    10 s failed though the bytes kept flowing. A stream goes out in urllib3's 16 KiB sends, each
    bounded; the SDKs' checksums read it in chunks and seek back, as do their retries."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self._view = memoryview(data).cast("B")
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def __len__(self) -> int:
        return len(self._view)

    def readinto(self, buffer: Any) -> int:
        n = max(0, min(len(buffer), len(self._view) - self._pos))
        buffer[:n] = self._view[self._pos:self._pos + n]
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._view)}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos


Sink = Callable[[Any], None]
