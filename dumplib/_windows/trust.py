"""Whether what the AeDebug handler runs, imports and writes can be changed by anyone but the machine's
administrators: the handler runs in every crashing process's context, services' (SYSTEM) included.

The Linux handler's core_pattern checks (_linux/core_pattern.py) have this twin: a file or directory
may steer the handler only when SYSTEM, Administrators or TrustedInstaller own it, no one else may
change it (or give themselves that), and it is no reparse point (symbolic link, junction). Judged on a
handle opened without following a reparse point (private.open_no_follow), by its owner and DACL
(GetSecurityInfo), never by its name again.

What no one else may hold depends on the place (rights below): on the directories the handler imports
from or writes in, adding a file or subdirectory (a module or package that shadows another, a file
planted where the dump goes); on the directories above them, only removing or renaming an entry (a new
sibling steers nothing: every volume root lets Authenticated Users add folders); on a file it runs or
imports, changing it.
"""
from __future__ import annotations

import sys

if sys.platform != "win32":  # survives python -O, unlike the assert below
    raise ImportError(f"{__name__} is Windows only")
assert sys.platform == "win32"  # tells type checkers on other platforms to skip this module

import ctypes
import json
import os
import subprocess
from typing import List, Optional, Sequence, Tuple

from . import advapi32, kernel32, wrappers
from ._common import Win32Error
from .ntdll import UNDER_WINE
from .private import (ADMINISTRATORS, DELETE, FILE_APPEND_DATA, FILE_DELETE_CHILD, FILE_WRITE_DATA, GENERIC_ALL,
                      GENERIC_WRITE, OWNER_RIGHTS, SYSTEM, WRITE_DAC, WRITE_OWNER, Ace, _ALLOWS, _DENIES, _who,
                      open_no_follow, read_descriptor)

#: NT SERVICE\TrustedInstaller: owns Program Files and Windows' own files.
TRUSTED_INSTALLER = "S-1-5-80-956008885-3418522649-1831038044-1853292631-2271478464"
#: The only owners (and the only holders of the rights below) a handler's file may have.
MACHINE_ADMINS = (SYSTEM, ADMINISTRATORS, TRUSTED_INSTALLER)

#: On a directory the handler imports from or writes in: add, remove or rename an entry, or give themselves that.
HELD_DIRECTORY_RIGHTS = (FILE_WRITE_DATA | FILE_APPEND_DATA | FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER
                         | GENERIC_WRITE | GENERIC_ALL)
#: On a directory above those: remove or rename an entry (the one below), or give themselves that.
ABOVE_RIGHTS = FILE_DELETE_CHILD | DELETE | WRITE_DAC | WRITE_OWNER | GENERIC_ALL
#: On a file the handler runs or imports: change, replace or remove it, or give themselves that.
CODE_FILE_RIGHTS = FILE_WRITE_DATA | FILE_APPEND_DATA | DELETE | WRITE_DAC | WRITE_OWNER | GENERIC_WRITE | GENERIC_ALL

#: Seconds the interpreter the handler will run is given to say its sys.path (it imports only dumplib).
ASK_PATIENCE = 60.0


def machine_admins() -> Tuple[str, ...]:
    """MACHINE_ADMINS; under Wine also its one user, who is its administrator: Wine keeps no file owner
    (every file reads back as that user's) and has no access checks between processes, so only what
    the DACL it makes from the Unix mode says (a folder anyone may write to) can be judged there."""
    return MACHINE_ADMINS + ((wrappers.current_user_sid(),) if UNDER_WINE else ())


def above_rights() -> int:
    """ABOVE_RIGHTS; under Wine without removing or renaming: Wine shows a sticky folder anyone may write
    to (/tmp) as Everyone with full control, blind to the sticky bit that is what stops others there from
    removing or renaming what is not theirs (a world-writable folder the handler uses is still refused)."""
    return ABOVE_RIGHTS & ~(FILE_DELETE_CHILD | DELETE) if UNDER_WINE else ABOVE_RIGHTS


def machine_problem(owner: Optional[str], aces: Optional[Sequence[Ace]], rights: int,
                    admins: Sequence[str] = MACHINE_ADMINS) -> Optional[str]:
    """Why a file with this *owner* and DACL (*aces*; None: none) could be changed by someone other than
    the machine's administrators (*admins*), said as the end of "X ..." (None: it cannot). *rights* are
    what no one else may hold there."""
    if owner not in admins:
        return (f"is owned by {_who(owner) if owner else 'no one'}, not SYSTEM, Administrators or TrustedInstaller:"
                " its owner can change it at will")
    if aces is None:
        return "has no DACL, so anyone can change it"
    for ace in aces:
        if ace.flags & advapi32.INHERIT_ONLY_ACE or ace.kind in _DENIES:
            continue  # handed down to children only; or a denial, which grants nothing
        if ace.kind not in _ALLOWS or ace.sid is None:
            return f"has an access entry of type {ace.kind} that dumplib cannot judge"
        if ace.sid not in admins and ace.sid != OWNER_RIGHTS and ace.mask & rights:
            return f"can be changed by {_who(ace.sid)} (access mask 0x{ace.mask:08X})"
    return None


def object_problem(path: str, rights: int) -> Optional[str]:
    """machine_problem for the file or directory *path*, on a handle that does not follow a reparse
    point; a reparse point, or one that cannot be opened or read, is a problem too."""
    try:
        handle = open_no_follow(path, directory=True)  # attributes and security: a file opens so too
    except Win32Error as exc:
        return f"cannot be opened to check it ({exc.message})"
    with wrappers.handle_closing(handle):
        try:
            info = kernel32.BY_HANDLE_FILE_INFORMATION()
            kernel32.GetFileInformationByHandle(handle, ctypes.byref(info))
            if info.dwFileAttributes & kernel32.FILE_ATTRIBUTE_REPARSE_POINT:
                return "is a symbolic link or junction (a reparse point): where it leads can be changed"
            descriptor = ctypes.c_void_p()
            what = advapi32.OWNER_SECURITY_INFORMATION | advapi32.DACL_SECURITY_INFORMATION
            advapi32.GetSecurityInfo(handle, advapi32.SE_FILE_OBJECT, what, None, None, None, None,
                                     ctypes.byref(descriptor))
        except Win32Error as exc:
            return f"cannot be checked ({exc.message})"
    try:
        owner, aces = read_descriptor(descriptor.value or 0)
    finally:
        kernel32.LocalFree(descriptor)
    return machine_problem(owner, aces, rights, machine_admins())


def chain_problem(path: str, rights: int) -> Optional[str]:
    """The first of *path* (judged with *rights*) and every directory above it (above_rights()) that
    someone other than the machine's administrators could change, as "X is ..." (None: none). A path
    that does not exist is judged by the nearest directory above it that does, as a directory the
    handler uses (HELD_DIRECTORY_RIGHTS): whoever could add to it could make the missing entry."""
    path = os.path.abspath(path)
    held = rights
    while not os.path.lexists(path):
        parent = os.path.dirname(path)
        if parent == path:
            return f"{path} does not exist"
        path, held = parent, HELD_DIRECTORY_RIGHTS
    current, first = path, True
    while True:
        why = object_problem(current, held if first else above_rights())
        if why is not None:
            return f"{current} {why}"
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current, first = parent, False


def handler_view(executable: str) -> Tuple[List[str], str]:
    """(sys.path, dumplib's package directory) as the handler will see them: asked of *executable* run
    as the handler runs it (-I: no environment, no user site, no current directory)."""
    code = "import json, os, sys, dumplib; print(json.dumps([sys.path, os.path.dirname(dumplib.__file__)]))"
    done = subprocess.run([executable, "-I", "-c", code], capture_output=True, text=True, timeout=ASK_PATIENCE,
                          cwd=os.environ.get("SystemRoot", "C:\\Windows"), env={"SystemRoot": os.environ.get(
                              "SystemRoot", "C:\\Windows")})
    if done.returncode != 0:
        raise RuntimeError(f"{executable} -I cannot import dumplib: {done.stderr.strip()[-400:]}")
    path, package = json.loads(done.stdout.strip().splitlines()[-1])
    return [p for p in path if p], package


def handler_problems(executable: str, sys_path: Sequence[str], package: str, directory: str) -> List[str]:
    """Everything the handler would run, import from or write in that someone other than the machine's
    administrators could change: the interpreter and the files beside it (its DLLs), every sys.path
    entry, dumplib's package (each file and folder), the dump directory; each said as "X is ..."."""
    problems: List[str] = []

    def judge(path: str, rights: int) -> None:
        why = chain_problem(path, rights)
        if why is not None and why not in problems:
            problems.append(why)

    judge(executable, CODE_FILE_RIGHTS)
    home = os.path.dirname(os.path.abspath(executable))
    judge(home, HELD_DIRECTORY_RIGHTS)
    for name in sorted(os.listdir(home)):
        full = os.path.join(home, name)
        if os.path.isfile(full):
            judge(full, CODE_FILE_RIGHTS)
    for entry in sys_path:
        judge(entry, CODE_FILE_RIGHTS if os.path.isfile(entry) else HELD_DIRECTORY_RIGHTS)
    for root, dirs, files in os.walk(package):
        judge(root, HELD_DIRECTORY_RIGHTS)
        for name in files:
            judge(os.path.join(root, name), CODE_FILE_RIGHTS)
    judge(directory, HELD_DIRECTORY_RIGHTS)
    return problems
