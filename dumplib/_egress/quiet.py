"""The logger guard: while dumplib talks to a store, the SDKs' loggers say nothing.

Seen with DEBUG logging on (tests/e2e_linux/test_egress_s3.py and test_egress_azure.py hold it): botocore logs the
Authorization header (the access key id) and every UploadPart's body (the dump's bytes: the target's
memory in a log file); urllib3 logs each request line (a SAS signature, were one accepted). So for
the duration of every SDK call phase (probe, upload, commit) the SDK loggers are silenced whatever
the host application configured, and put back afterwards. urllib3 is shared with the host
application: its records are dropped only on threads that are talking to a store.
"""
from __future__ import annotations

import contextlib
import logging
import threading
from typing import Dict, Iterator, List, Tuple

#: The SDKs' logger trees, silenced while a store is used.
SDK_LOGGERS = ("azure", "botocore", "boto3", "s3transfer", "msal", "msal_extensions")
#: Shared with everyone: filtered only on threads that are talking to a store.
SHARED_LOGGERS = ("urllib3", "urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry",
                  "urllib3.response")

_lock = threading.Lock()
_depth = 0
_saved: List[Tuple[logging.Logger, int, bool, bool]] = []
_null = logging.NullHandler()
_local = threading.local()


class _OnStoreThreads(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(_local, "active", False)


_filter = _OnStoreThreads()


def _sdk_loggers() -> List[logging.Logger]:
    names = [n for n in list(logging.root.manager.loggerDict)
             if any(n == root or n.startswith(root + ".") for root in SDK_LOGGERS)]
    return [logging.getLogger(n) for n in sorted(set(names) | set(SDK_LOGGERS))]


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the SDK loggers (all threads) and urllib3 (this thread) until the outermost exit."""
    global _depth
    with _lock:
        if _depth == 0:
            for logger in _sdk_loggers():
                _saved.append((logger, logger.level, logger.propagate, logger.disabled))
                logger.disabled = True
            for root in SDK_LOGGERS:
                top = logging.getLogger(root)
                # Loggers an SDK creates meanwhile inherit this: nothing reaches the root's handlers, and
                # the NullHandler keeps logging's last-resort handler from printing a warning to stderr.
                top.setLevel(logging.CRITICAL + 1)
                top.propagate = False
                top.addHandler(_null)
            for name in SHARED_LOGGERS:
                logging.getLogger(name).addFilter(_filter)
        _depth += 1
    was = getattr(_local, "active", False)
    _local.active = True
    try:
        yield
    finally:
        _local.active = was
        with _lock:
            _depth -= 1
            if _depth == 0:
                for logger, level, propagate, disabled in reversed(_saved):
                    logger.setLevel(level)
                    logger.propagate, logger.disabled = propagate, disabled
                _saved.clear()
                for root in SDK_LOGGERS:
                    logging.getLogger(root).removeHandler(_null)
                for name in SHARED_LOGGERS:
                    logging.getLogger(name).removeFilter(_filter)


def mark_thread() -> None:
    """For a worker thread of an upload: its urllib3 records are dropped too (inside quiet())."""
    _local.active = True


def snapshot() -> Dict[str, Tuple[int, bool, bool]]:
    """The SDK loggers' settings (tests check they are put back)."""
    return {lg.name: (lg.level, lg.propagate, lg.disabled) for lg in _sdk_loggers()}
