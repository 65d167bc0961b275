"""Whether a file (or directory) may hold this user's secret on Windows, judged on the handle opened.

stat names no owner on Windows and its mode is made up, so the store retention key
(_egress/signing.py) is judged here instead: opened without following a reparse point (a symbolic
link or junction is opened itself, and refused), then, on that very handle, its type, its owner and
its DACL (GetSecurityInfo), never by its name again, which another process could swap meanwhile.

The rule (descriptor_problem): the owner is this user; the DACL exists; no ACE that applies to the
file itself grants anyone but this user, SYSTEM and Administrators (the three a user's profile
folder grants, and wrappers.private_sddl gives every file dumplib creates) a right that reads the
secret, changes it or hands such a right out (write the DACL, take ownership). Deny ACEs are not
counted as protection: an allow grant to another is refused whatever comes before it. An ACE type
the rule does not know is refused, never passed.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
import dataclasses
import os
import stat
from ctypes import wintypes as wt
from typing import List, Optional, Sequence, Tuple

from . import advapi32, kernel32, wrappers
from ._common import Win32Error

SYSTEM = "S-1-5-18"
ADMINISTRATORS = "S-1-5-32-544"
#: OWNER RIGHTS: whoever owns the object, which the rule has already required to be this user.
OWNER_RIGHTS = "S-1-3-4"
#: Names for the SIDs a refusal most often names (the rest are said as SIDs: `icacls` takes either).
_WELL_KNOWN = {"S-1-1-0": "Everyone", "S-1-5-11": "Authenticated Users", "S-1-5-32-545": "Users",
               "S-1-5-32-546": "Guests", "S-1-5-4": "INTERACTIVE", "S-1-3-0": "CREATOR OWNER"}

DELETE = 0x00010000
WRITE_DAC = 0x00040000
WRITE_OWNER = 0x00080000
GENERIC_ALL = 0x10000000
GENERIC_WRITE = 0x40000000
GENERIC_READ = 0x80000000
FILE_READ_DATA = 0x1  # FILE_LIST_DIRECTORY on a directory
FILE_WRITE_DATA = 0x2  # FILE_ADD_FILE
FILE_APPEND_DATA = 0x4  # FILE_ADD_SUBDIRECTORY
FILE_DELETE_CHILD = 0x40
#: What no one else may hold on the key file: read it, change it, or give themselves either.
FILE_SECRET_RIGHTS = (FILE_READ_DATA | FILE_WRITE_DATA | FILE_APPEND_DATA | DELETE | WRITE_DAC | WRITE_OWNER
                      | GENERIC_READ | GENERIC_WRITE | GENERIC_ALL)
#: What no one else may hold on the key's directory: put, remove or rename files in it, or give themselves that.
DIRECTORY_SECRET_RIGHTS = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER
                           | GENERIC_WRITE | GENERIC_ALL)

_ALLOWS = (advapi32.ACCESS_ALLOWED_ACE_TYPE, advapi32.ACCESS_ALLOWED_CALLBACK_ACE_TYPE)
_DENIES = (advapi32.ACCESS_DENIED_ACE_TYPE, advapi32.ACCESS_DENIED_CALLBACK_ACE_TYPE)


@dataclasses.dataclass(frozen=True)
class Ace:
    """One ACE of a DACL, as the rule reads it."""

    kind: int
    flags: int
    mask: int
    #: The trustee's SID as a string; None for an ACE type whose layout the rule does not read.
    sid: Optional[str]


def _sid_text(sid: int) -> str:
    text = wt.LPWSTR()
    advapi32.ConvertSidToStringSidW(sid, ctypes.byref(text))
    try:
        return text.value or ""
    finally:
        kernel32.LocalFree(ctypes.cast(text, ctypes.c_void_p))


def read_descriptor(descriptor: int) -> Tuple[Optional[str], Optional[List[Ace]]]:
    """(the owner's SID string or None, the DACL's ACEs or None when there is no DACL) of the
    self-relative or absolute security descriptor at *descriptor*."""
    owner, defaulted = ctypes.c_void_p(), wt.BOOL()
    advapi32.GetSecurityDescriptorOwner(descriptor, ctypes.byref(owner), ctypes.byref(defaulted))
    present, acl = wt.BOOL(), ctypes.c_void_p()
    advapi32.GetSecurityDescriptorDacl(descriptor, ctypes.byref(present), ctypes.byref(acl), ctypes.byref(defaulted))
    owner_sid = _sid_text(owner.value) if owner.value else None
    if not present.value or not acl.value:
        return owner_sid, None  # no DACL, or a NULL DACL: both let everyone in
    size = advapi32.ACL_SIZE_INFORMATION()
    advapi32.GetAclInformation(acl, ctypes.byref(size), ctypes.sizeof(size), advapi32.AclSizeInformation)
    aces: List[Ace] = []
    for index in range(size.AceCount):
        address = ctypes.c_void_p()
        advapi32.GetAce(acl, index, ctypes.byref(address))
        head = advapi32.ACE_HEADER.from_address(address.value or 0)
        if head.AceType in _ALLOWS + _DENIES:
            body = advapi32.ACCESS_ALLOWED_ACE.from_address(address.value or 0)
            sid = _sid_text((address.value or 0) + advapi32.ACCESS_ALLOWED_ACE.SidStart.offset)
            aces.append(Ace(head.AceType, head.AceFlags, body.Mask, sid))
        else:
            aces.append(Ace(head.AceType, head.AceFlags, 0, None))
    return owner_sid, aces


def _who(sid: str) -> str:
    name = _WELL_KNOWN.get(sid)
    return f"{sid} ({name})" if name else sid


def descriptor_problem(owner: Optional[str], aces: Optional[Sequence[Ace]], user: str, rights: int,
                       owners: Sequence[str] = (), done: str = "read or changed") -> Optional[str]:
    """Why a file with this *owner* and DACL (*aces*; None: none) may not hold *user*'s secret, said
    as the end of "the file ..." (None: it may). *rights* are what no one else may hold (what they
    would let be *done* to it); *owners* are owners accepted besides *user*."""
    if owner != user and owner not in owners:
        return (f"belongs to another user (its owner is {_who(owner) if owner else 'not set'}; an elevated"
                " administrator's new files are owned by Administrators: icacls on it: /setowner %USERNAME%)")
    if aces is None:
        return "has no DACL, so anyone can read it; give it one (icacls on it: /inheritance:r /grant:r %USERNAME%:F)"
    trusted = {user, SYSTEM, ADMINISTRATORS, OWNER_RIGHTS}
    for ace in aces:
        if ace.flags & advapi32.INHERIT_ONLY_ACE or ace.kind in _DENIES:
            continue  # handed down to children only; or a denial, which takes away and grants nothing
        if ace.kind not in _ALLOWS or ace.sid is None:
            return f"has an access entry of type {ace.kind} that dumplib cannot judge; remove it (icacls shows it)"
        if ace.sid not in trusted and ace.mask & rights:
            return (f"can be {done} by {_who(ace.sid)} (access mask 0x{ace.mask:08X}); remove that entry"
                    f" (icacls on it: /inheritance:r /remove *{ace.sid})")
    return None


def handle_problem(handle: int, directory: bool = False) -> Optional[str]:
    """descriptor_problem for the file (or, with *directory*, the directory) open as *handle*, after
    its type: a reparse point (symbolic link, junction), or not a file on a disk, is refused."""
    if kernel32.GetFileType(handle) != kernel32.FILE_TYPE_DISK:
        return "is not a regular file"
    info = kernel32.BY_HANDLE_FILE_INFORMATION()
    kernel32.GetFileInformationByHandle(handle, ctypes.byref(info))
    if info.dwFileAttributes & kernel32.FILE_ATTRIBUTE_REPARSE_POINT:
        return "is a symbolic link or junction (a reparse point)"
    if bool(info.dwFileAttributes & kernel32.FILE_ATTRIBUTE_DIRECTORY) != directory:
        return "is a directory" if not directory else "is not a directory"
    descriptor = ctypes.c_void_p()
    what = advapi32.OWNER_SECURITY_INFORMATION | advapi32.DACL_SECURITY_INFORMATION
    advapi32.GetSecurityInfo(handle, advapi32.SE_FILE_OBJECT, what, None, None, None, None, ctypes.byref(descriptor))
    try:
        owner, aces = read_descriptor(descriptor.value or 0)
    finally:
        kernel32.LocalFree(descriptor)
    user = wrappers.current_user_sid()
    if directory:
        # Administrators and SYSTEM can take any file anyway: a directory of theirs steers nothing.
        return descriptor_problem(owner, aces, user, DIRECTORY_SECRET_RIGHTS, owners=(SYSTEM, ADMINISTRATORS),
                                  done="written to")
    return descriptor_problem(owner, aces, user, FILE_SECRET_RIGHTS)


def open_no_follow(path: str, directory: bool = False) -> int:
    """A handle on *path* itself, never on what a reparse point in its last component leads to: read
    access for a file, attributes and security for a directory. Win32Error when it cannot be opened."""
    if directory:
        access, flags = kernel32.READ_CONTROL | kernel32.FILE_READ_ATTRIBUTES, kernel32.FILE_FLAG_BACKUP_SEMANTICS
        share = kernel32.FILE_SHARE_READ | kernel32.FILE_SHARE_WRITE | kernel32.FILE_SHARE_DELETE
    else:
        access, flags, share = kernel32.GENERIC_READ, 0, kernel32.FILE_SHARE_READ
    return int(kernel32.CreateFileW(path, access, share, None, kernel32.OPEN_EXISTING,
                                    flags | kernel32.FILE_FLAG_OPEN_REPARSE_POINT, None))


def owner_accepted(owner: Optional[str], user: str, directory: bool) -> bool:
    """Whether a file (or, with *directory*, a directory) owned by *owner* counts as *user*'s own, for
    deleting it (retention, stale temporaries) or trusting it: a file only when *user* owns it (every
    file dumplib creates names its owner: wrappers.private_sddl); a directory also when SYSTEM or
    Administrators own it (an elevated administrator's os.mkdir; they can take any file anyway)."""
    if owner is None:
        return False
    return owner == user or (directory and owner in (SYSTEM, ADMINISTRATORS))


def owner_of(handle: int) -> Optional[str]:
    """The owner SID of the file or directory open as *handle* (None: the descriptor names none)."""
    descriptor = ctypes.c_void_p()
    advapi32.GetSecurityInfo(handle, advapi32.SE_FILE_OBJECT, advapi32.OWNER_SECURITY_INFORMATION, None, None, None,
                             None, ctypes.byref(descriptor))
    try:
        return read_descriptor(descriptor.value or 0)[0]
    finally:
        kernel32.LocalFree(descriptor)


def owned_here(path: str, st: "os.stat_result") -> bool:
    """Whether the file *st* describes, at *path*, is this user's own (owner_accepted), judged on a
    handle opened without following a reparse point, and only if that handle is the very file *st*
    describes (a file swapped in since the lstat is not judged in its place). False whenever it
    cannot be told: a file dumplib may not prove its own is never deleted."""
    import msvcrt

    try:
        handle = open_no_follow(path, directory=True)  # attributes and security only: files open so too
    except Win32Error:
        return False
    try:
        fd = msvcrt.open_osfhandle(handle, os.O_RDONLY)
    except OSError:
        wrappers.close_handle(handle)
        return False
    try:
        if not os.path.samestat(st, os.fstat(fd)):
            return False
        owner = owner_of(msvcrt.get_osfhandle(fd))
    except (OSError, Win32Error):
        return False
    finally:
        os.close(fd)  # closes the handle
    return owner_accepted(owner, wrappers.current_user_sid(), directory=stat.S_ISDIR(st.st_mode))


def directory_problem(path: str) -> Optional[str]:
    """handle_problem for the directory *path*, opened without following a reparse point."""
    try:
        handle = open_no_follow(path, directory=True)
    except Win32Error as exc:
        return f"cannot be opened ({exc.message})"
    with wrappers.handle_closing(handle):
        try:
            return handle_problem(handle, directory=True)
        except Win32Error as exc:
            return f"cannot be judged ({exc.message})"
