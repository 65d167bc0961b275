"""Destinations that are URLs: Azure Blob Storage and S3 (docs/egress.md).

Standard library only: parsing a URL, naming the object and saying where it goes never imports an
SDK. The SDKs (the ``azure`` and ``s3`` extras) are imported by ``dumplib._egress`` only when a dump
actually goes to a URL.

Accepted forms:

- ``s3://BUCKET/prefix/name`` (credentials, region and endpoint from the AWS default chain;
  ``AWS_ENDPOINT_URL`` for S3-compatible stores),
- ``az://CONTAINER/prefix/name`` (the account from ``AZURE_STORAGE_CONNECTION_STRING`` or
  ``AZURE_STORAGE_ACCOUNT``),
- ``https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix/name``.

A name ending in ``/`` (or a bare container/bucket) is a prefix: dumplib names the dump in it as it
does in a directory. The same name tokens as local paths. A query string (a SAS token) or a
``user:password@`` is refused: a credential in the command line would show in ``ps``, the
messages, the sidecar and ``--json``.
"""
from __future__ import annotations

import posixpath

TYPE_CHECKING = False  # typing's, to type checkers; typing is not imported at run time (dumplib/_typing.py)
if TYPE_CHECKING:
    from typing import Any, Optional

from ._accel import datetime  # _datetime: the same classes, without the datetime module's start-up
from ._record import record, replace
from .errors import InvalidDumpPath

SCHEMES = ("s3", "az", "https", "http")
#: The longest object name dumplib writes: S3 keys and Azure blob names are at most 1024 bytes, and the
#: sidecar adds ".json" and a taken name "-NN".
MAX_KEY = 1024 - len(".json") - 3
#: The extra each store needs, as `pip install` takes it.
EXTRAS = {"azure": "dumplib[azure]", "s3": "dumplib[s3]"}


def is_remote(path: Any) -> bool:
    """Whether *path* is a URL destination (``s3://``, ``az://``, ``https://``) rather than a local path.

    (A local directory really named ``s3:`` is written ``./s3:/...``.)"""
    if not isinstance(path, str) or "://" not in path:
        return False
    return path.split("://", 1)[0].lower() in SCHEMES


@record(frozen=True)
class RemoteTarget:
    """A parsed destination URL; *key* may still hold name tokens, or end in ``/`` (a prefix)."""

    store: str  # "azure" | "s3"
    container: str  # the container or bucket
    key: str
    #: Azure: https://ACCOUNT.blob.core.windows.net (None for az://: from the configuration).
    account_url: Optional[str] = None
    account: Optional[str] = None

    def display(self, key: Optional[str] = None) -> str:
        """The URL as messages, the sidecar and --json show it: never a query, never a credential."""
        key = self.key if key is None else key
        if self.store == "s3":
            return f"s3://{self.container}/{key}"
        if self.account_url:
            return f"{self.account_url}/{self.container}/{key}"
        return f"az://{self.container}/{key}"

    @property
    def is_prefix(self) -> bool:
        return self.key == "" or self.key.endswith("/")

    @property
    def prefix(self) -> str:
        """The 'directory' part of the key (with its trailing /), where the probe writes."""
        return self.key if self.is_prefix else (self.key.rsplit("/", 1)[0] + "/" if "/" in self.key else "")

    def with_key(self, key: str) -> "RemoteTarget":
        return replace(self, key=key)


#: S3 bucket and Azure container names: 3-63 of lower-case letters, digits, '.' and '-' (Azure allows no
#: '.', which the service then refuses with its own error; anything else is refused here, before any call).
_CONTAINER_NAME = r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]"


def parse_url(url: str) -> RemoteTarget:
    """The destination *url* names, or InvalidDumpPath (exit 7) saying why; the message never repeats
    a query string or a user:password."""
    import urllib.parse  # a URL destination's only (with ipaddress): start-up a local dump does not pay

    u = urllib.parse.urlsplit(url)
    scheme = u.scheme.lower()
    if "@" in url:
        # user:password@ (a secret key may hold '/', which moves it out of the netloc urlsplit sees):
        # refused, and nothing before the last '@' is ever repeated.
        tail = url.rsplit("@", 1)[1]
        shown = f"{u.scheme}://…@{tail.split('?', 1)[0]}"
        raise InvalidDumpPath(f"{shown}: credentials in the URL are not accepted; use the standard credential"
                              " sources (docs/egress.md)", path=shown)
    netloc = u.netloc
    shown = urllib.parse.urlunsplit((u.scheme, netloc, u.path, "", ""))

    def bad(why: str) -> InvalidDumpPath:
        return InvalidDumpPath(f"{shown}: {why}", path=shown)

    if u.query or u.fragment or "?" in url:
        raise bad("a query string (a SAS token?) is not accepted in a destination URL: it would show in `ps`,"
                  " in messages and in the sidecar. Give credentials through AZURE_STORAGE_CONNECTION_STRING,"
                  " DefaultAzureCredential or the AWS credential chain (docs/egress.md)")
    path = u.path.lstrip("/")
    if any(part in (".", "..") for part in path.split("/")):
        raise bad("'.' and '..' are not object names")
    if scheme in ("s3", "az"):
        if not u.netloc:
            raise bad(f"expected {scheme}://{'BUCKET' if scheme == 's3' else 'CONTAINER'}/prefix/name")
        import re  # a URL destination's only: not every dump's start-up

        if not re.fullmatch(_CONTAINER_NAME, u.netloc):
            raise bad(f"{u.netloc!r} is not a {'bucket' if scheme == 's3' else 'container'} name (3-63 lower-case"
                      " letters, digits, '.' and '-')")
        return RemoteTarget("s3" if scheme == "s3" else "azure", u.netloc, path)
    host = (u.hostname or "").lower()
    parts = path.split("/", 1)
    if host.endswith(".blob.core.windows.net") or ".blob.core." in host:  # public and sovereign clouds
        if scheme != "https":
            raise bad("Azure Blob Storage is reached over https only")
        if not parts[0]:
            raise bad("expected https://ACCOUNT.blob.core.windows.net/CONTAINER/prefix/name")
        return RemoteTarget("azure", parts[0], parts[1] if len(parts) > 1 else "", f"https://{netloc}",
                            host.split(".", 1)[0])
    raise bad("only Azure Blob Storage URLs (https://ACCOUNT.blob.core.windows.net/CONTAINER/...), az://CONTAINER/..."
              " and s3://BUCKET/... are destinations")


def object_name(target: RemoteTarget, proc: Any, kind: Any, when: datetime.datetime, extension: str,
                default_template: str) -> RemoteTarget:
    """The target with its tokens expanded; a prefix gets dumplib's own name (as a directory does)."""
    from .placement import expand_tokens

    key = expand_tokens(target.key, proc, kind, when)
    if target.is_prefix:
        key += expand_tokens(default_template, proc, kind, when) + extension
    if posixpath.normpath("/" + key) != "/" + key.rstrip("/") or key.endswith("/"):
        raise InvalidDumpPath(f"{target.display(key)}: the expanded name is not a plain object name",
                              path=target.display(key))
    if len(key.encode("utf-8", "surrogateescape")) > MAX_KEY:
        raise InvalidDumpPath(f"{target.display(key)[:120]}…: the object's name is {len(key.encode('utf-8', 'surrogateescape'))}"
                              f" bytes; with its sidecar's '.json' (and a '-N' when the name is taken) the stores"
                              f" take at most {MAX_KEY}: shorten the prefix or the template",
                              path=target.display(key))
    return target.with_key(key)
