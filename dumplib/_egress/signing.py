"""Who vouches for a sidecar in an object store: a keyed MAC only this user of this machine can make.

On a disk, retention trusts a dump because this user owns both it and its sidecar (``retention.py``).
A store has no such owner: anyone allowed to write the prefix can put a sidecar there naming
another team's object, and a retention that trusted it would delete that object. So every sidecar
dumplib uploads carries ``retention: {key_id, mac}``, an HMAC-SHA256 over the object's store,
container, key, size, sha256 and finish time, made with a 32-byte key that never leaves this
machine. Retention on a prefix (``_egress/retention.py``) counts and deletes only objects whose
sidecar's MAC checks with this key.

The key is ``~/.dumplib/egress-key`` (created on first need: exclusive, owner-only, through a
temporary that is then placed without replacing anything), or the file ``DUMPLIB_EGRESS_KEY`` names
(a fleet that wants one retention across machines gives them the same key file). A key file that is
a symlink, another user's, readable by others, or not 64 hex digits is refused, never used. On
Windows, where stat names no owner and no real mode, the host judges the file it opened (a reparse
point, its owner, the DACL's grants: _windows/private.py); the key is made with an explicit owner
and a protected DACL.
"""
from __future__ import annotations

import binascii
import hashlib
import hmac
import json
import os
import secrets
import stat
from typing import Any, Dict, Optional

from .._platform import Host
from ..errors import InvalidArgument

KEY_VARIABLE = "DUMPLIB_EGRESS_KEY"
#: The sidecar field that carries the MAC.
FIELD = "retention"
_DOMAIN = "dumplib-store-retention-v1"


def key_path() -> str:
    """Where the key is (or will be made)."""
    named = os.environ.get(KEY_VARIABLE)
    return named if named else os.path.join(os.path.expanduser("~"), ".dumplib", "egress-key")


def _refuse(path: str, why: str) -> InvalidArgument:
    return InvalidArgument(f"the store retention key {path} {why}; fix it, or name another file with"
                           f" {KEY_VARIABLE} (docs/egress.md)", argument=KEY_VARIABLE, value=path)


def _read(path: str, host: Host) -> bytes:
    """The key in *path*, checked as the module doc says (InvalidArgument otherwise)."""
    fd = host.open_secret(path)  # never through a symlink (Windows: a reparse point is opened, then refused)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _refuse(path, "is not a regular file")
        if not host.mine(st, path):
            raise _refuse(path, "belongs to another user")
        if host.owners_known and st.st_mode & 0o077:
            raise _refuse(path, f"can be read by others (mode {stat.S_IMODE(st.st_mode):o}; chmod 600 it)")
        why = host.secret_problem(fd)  # the opened file's owner and DACL, where stat names neither (Windows)
        if why is not None:
            raise _refuse(path, why)
        text = os.read(fd, 200).strip()
    finally:
        os.close(fd)
    try:
        key = binascii.unhexlify(text)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != 32:
        raise _refuse(path, "does not hold a key (64 hex digits)")
    return key


def load_key(host: Host, create: bool = True) -> bytes:
    """This user's store retention key, made on first need (*create*, and only at the default place: a
    file DUMPLIB_EGRESS_KEY names must exist); InvalidArgument when the file is unsafe or cannot be made."""
    path = key_path()
    if create and not os.environ.get(KEY_VARIABLE):
        return make_key(path, host)
    key = _existing(path, host)
    if key is None:
        raise _refuse(path, "does not exist")
    return key


def make_key(path: str, host: Host) -> bytes:
    """The key in *path*, made there first if there is none (the postmortem handler's, in its state
    directory); InvalidArgument when the file or its directory is unsafe."""
    key = _existing(path, host)
    return key if key is not None else _make(path, host)


def _existing(path: str, host: Host) -> Optional[bytes]:
    """The key in *path* (checked as the module doc says), None when there is no file."""
    try:
        if os.path.islink(path):
            raise _refuse(path, "is a symbolic link")
        return _read(path, host)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _refuse(path, f"cannot be read ({exc.strerror})") from None


def _make(path: str, host: Host) -> bytes:
    directory = os.path.dirname(path)
    try:
        os.mkdir(directory, 0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise _refuse(path, f"cannot be made ({exc.strerror})") from None
    st = os.lstat(directory)
    if not stat.S_ISDIR(st.st_mode) or not host.mine(st, directory) or (host.owners_known and st.st_mode & 0o022):
        raise _refuse(path, f"would be made in {directory}, which is not this user's private directory")
    why = host.private_directory_problem(directory)
    if why is not None:
        raise _refuse(path, f"would be made in {directory}, which is not this user's private directory ({why})")
    temp = os.path.join(directory, f".egress-key-{secrets.token_hex(8)}.tmp")
    fd = host.open_private(temp)  # exclusive, owner-only, never through a symlink
    try:
        os.write(fd, secrets.token_hex(32).encode("ascii") + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        host.place_new(temp, path)
    except FileExistsError:
        pass  # another dumplib made it first: theirs is the key
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)
        host.forget(temp)  # its lock's descriptor with it (place_new let it go already when it placed it)
    return _read(path, host)


def key_id(key: bytes) -> str:
    """A public name of the key (its hash's first 16 hex digits): says which key signed, reveals nothing."""
    return hashlib.sha256(b"key-id:" + key).hexdigest()[:16]


def mac(key: bytes, store: str, container: str, object_key: str, size: int, sha256: str, finished_at: str) -> str:
    message = json.dumps([_DOMAIN, store, container, object_key, size, sha256, finished_at],
                         separators=(",", ":"), ensure_ascii=True)
    return hmac.new(key, message.encode("ascii"), hashlib.sha256).hexdigest()


def sign(sidecar: bytes, key: bytes, store: str, container: str, object_key: str) -> bytes:
    """*sidecar* (JSON bytes) with the MAC field added."""
    data = json.loads(sidecar)
    data[FIELD] = {"key_id": key_id(key), "mac": mac(key, store, container, object_key, data["size"],
                                                     data["sha256"], data["finished_at"])}
    return json.dumps(data, indent=2).encode("utf-8", "surrogateescape")


def vouched(data: Dict[str, Any], key: bytes, store: str, container: str, object_key: str) -> Optional[int]:
    """The dump's size if the sidecar *data* carries this key's MAC over *object_key*, else None."""
    field = data.get(FIELD)
    size, sha, finished = data.get("size"), data.get("sha256"), data.get("finished_at")
    if not (isinstance(field, dict) and isinstance(field.get("mac"), str) and isinstance(size, int)
            and not isinstance(size, bool) and isinstance(sha, str) and isinstance(finished, str)):
        return None
    try:
        expected = mac(key, store, container, object_key, size, sha, finished)
    except (TypeError, ValueError):
        return None
    # Bytes, not str: compare_digest raises on a non-ASCII str, and the sidecar is anyone's to plant.
    given = field["mac"].encode("utf-8", "surrogateescape")
    return size if hmac.compare_digest(given, expected.encode("ascii")) else None
