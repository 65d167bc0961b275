"""Azure Blob Storage: block blobs staged block by block (Put Block), committed once (Put Block List).

Credentials, in this order and nowhere else: ``AZURE_STORAGE_CONNECTION_STRING`` (for its account),
then DefaultAzureCredential (environment service principal, workload or managed identity, Azure CLI
login; never an interactive browser). The account is the URL's (``https://ACCOUNT.blob...``) or, for
``az://``, the connection string's or ``AZURE_STORAGE_ACCOUNT``'s.
"""
from __future__ import annotations

import os
import secrets
import urllib.parse
from typing import Any, Dict, List, Optional, Tuple

from ..errors import RemoteDestinationError
from ..remote import RemoteTarget
from . import Listed, PartStream, Store, Uploader, need
from .quiet import quiet

MiB = 1 << 20


def _conn_fields(conn: str) -> Dict[str, str]:
    fields: Dict[str, str] = {}
    for part in conn.split(";"):
        k, _, v = part.partition("=")
        fields[k.strip().lower()] = v.strip()
    return fields


def _conn_serves(conn: str, target: RemoteTarget) -> bool:
    """Whether the connection string is for the account *target* names: an ``az://`` URL takes its
    account from it; an ``https://`` one must name the same account (AccountName, or, in a SAS
    connection string, which has none, the BlobEndpoint's host)."""
    if target.account_url is None:
        return True
    fields = _conn_fields(conn)
    if fields.get("blobendpoint"):  # where the client sends the bytes: it must be the URL's account
        endpoint = urllib.parse.urlsplit(fields["blobendpoint"])
        return bool(endpoint.hostname) and endpoint.hostname == urllib.parse.urlsplit(target.account_url).hostname
    return fields.get("accountname") == target.account


def _quoted(etag: Any) -> str:
    """An ETag as HTTP quotes it: a listing gives it bare, a download's properties quoted."""
    return '"%s"' % str(etag).strip('"')


class AzureStore(Store):
    max_parts = 50_000

    def __init__(self, target: RemoteTarget) -> None:
        self.target = target
        self._blob = need("azure.storage.blob", target)
        self._clients: Dict[bool, Any] = {}

    def _service(self, probe: bool) -> Any:
        if probe in self._clients:
            return self._clients[probe]
        t, blob = self.target, self._blob
        # The storage default (15 s, then +3^n s, 3 retries) could hold a stopped target for minutes:
        # bounded to 3 retries per block, after about 2.5, 4.5 and 8.5 s (the SDK counts the try before it
        # sleeps: 0.5 + 2**n; measured 16 s from a cut to the exit under Wine). The probe does not retry.
        retry = (blob.ExponentialRetry(retry_total=0) if probe else
                 blob.ExponentialRetry(initial_backoff=0.5, increment_base=2, retry_total=3, random_jitter_range=0.5))
        kw: Dict[str, Any] = dict(retry_policy=retry, connection_timeout=10, read_timeout=60,
                                  max_block_size=8 * MiB, max_single_put_size=8 * MiB, logging_enable=False)
        conn = os.environ.get("AZURE_STORAGE_CONNECTION_STRING")
        with quiet():
            if conn and _conn_serves(conn, t):
                svc = blob.BlobServiceClient.from_connection_string(conn, **kw)
                if t.account_url is not None and svc.url.rstrip("/") != t.account_url.rstrip("/"):
                    svc = blob.BlobServiceClient(t.account_url, credential=svc.credential, **kw)
            else:
                account_url = t.account_url
                if account_url is None:
                    account = os.environ.get("AZURE_STORAGE_ACCOUNT")
                    if not account:
                        raise RemoteDestinationError(
                            f"{t.display()}: az:// needs AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT"
                            " with a DefaultAzureCredential source (managed identity, environment, az login)",
                            url=t.display(), store="azure", reason="no-credentials")
                    account_url = f"https://{account}.blob.core.windows.net"
                identity = need("azure.identity", t)
                cred = identity.DefaultAzureCredential(exclude_interactive_browser_credential=True)
                svc = blob.BlobServiceClient(account_url, credential=cred, **kw)
        self._clients[probe] = svc
        return svc

    def _client(self, key: str, probe: bool = False) -> Any:
        return self._service(probe).get_blob_client(self.target.container, key)

    def probe(self, prefix: str) -> str:
        name = f"{prefix}.dumplib-probe-{secrets.token_hex(8)}"
        with self.calling(None, "cannot write to"):
            # One uncommitted 1-byte block: proves credentials, container and write permission; no
            # blob appears in a listing, and the service drops uncommitted blocks within 7 days.
            self._client(name, probe=True).stage_block("probe-00", b"\0")
        return name

    def uploader(self, key: str, part: int, in_flight: int, overwrite: bool) -> Uploader:
        return _BlockUploader(self, key, part, in_flight, overwrite)

    def put_small(self, key: str, data: bytes, overwrite: bool) -> None:
        blob = self._blob
        with self.calling(key, "uploading to"):
            self._client(key).upload_blob(
                data, overwrite=overwrite, content_settings=blob.ContentSettings(content_type="application/json"),
                **({} if overwrite else {"if_none_match": "*"}))

    def delete(self, key: str) -> None:
        """Delete *key*; one that is not there is already what was asked (S3's DeleteObject says so too)."""
        try:
            with self.calling(key, "deleting"):
                self._client(key).delete_blob()
        except RemoteDestinationError as exc:
            if exc.service_code != "BlobNotFound":
                raise

    def exists(self, key: str) -> Optional[bool]:
        try:
            with quiet():
                return bool(self._client(key).exists())
        except Exception:
            return None

    def listing(self, prefix: str, limit: int) -> List[Listed]:
        out: List[Listed] = []
        with self.calling(prefix, "listing"):
            container = self._service(False).get_container_client(self.target.container)
            for item in container.walk_blobs(name_starts_with=prefix, include=["metadata"], delimiter="/"):
                if len(out) >= limit:
                    break
                if getattr(item, "size", None) is None:
                    # A BlobPrefix: a sub-"directory", not looked into (as os.listdir does not), but counted.
                    out.append(Listed(str(item.name), 0, ""))
                    continue
                sha = (item.metadata or {}).get("sha256")
                out.append(Listed(item.name, int(item.size), _quoted(item.etag), sha if isinstance(sha, str) else None))
        return out

    def get_small(self, key: str, limit: int) -> Optional[Tuple[bytes, str]]:
        try:
            with self.calling(key, "reading"):
                stream = self._client(key).download_blob(offset=0, length=limit + 1)
                return stream.readall(), _quoted(stream.properties.etag)
        except RemoteDestinationError as exc:
            if exc.service_code in ("BlobNotFound", "InvalidRange") or exc.status in (404, 416):
                return None
            raise

    def delete_if(self, key: str, etag: str) -> bool:
        match = need("azure.core", self.target).MatchConditions.IfNotModified
        try:
            with self.calling(key, "deleting"):
                self._client(key).delete_blob(etag=etag, match_condition=match)
            return True
        except RemoteDestinationError as exc:
            if exc.status in (404, 412) or exc.service_code in ("BlobNotFound", "ConditionNotMet"):
                return False
            raise

    def classify(self, exc: BaseException) -> Tuple[str, str, Optional[str], Optional[int]]:
        t = self.target
        az = need("azure.core.exceptions", t)

        status: Optional[int] = None
        code: Optional[str] = None
        reason, why = "unreachable", f"the storage service failed ({type(exc).__name__})"
        if isinstance(exc, az.ClientAuthenticationError) and exc.status_code is None:
            reason, why = "no-credentials", "no Azure credential could get a token (DefaultAzureCredential)"
        elif isinstance(exc, az.HttpResponseError):
            status = exc.status_code
            raw = getattr(exc, "error_code", None)
            code = str(getattr(raw, "value", raw)) if raw is not None else None  # a StorageErrorCode enum
            if code == "ContainerNotFound":
                reason, why = "no-container", f"the container {t.container!r} does not exist"
            elif code in ("AuthenticationFailed", "InvalidAuthenticationInfo", "NoAuthenticationInformation") \
                    or status == 401:
                reason, why = "bad-credentials", "the storage account refused the credentials"
            elif status == 403:
                reason, why = "no-permission", "these credentials may not write blobs in this container"
            elif code in ("ResourceNotFound", "AccountNotFound") or status == 404:
                reason, why = "no-container", "the account or container was not found"
            elif code in ("BlobAlreadyExists", "ConditionNotMet") or (status == 412 and code is None):
                reason, why = "no-permission", "the blob already exists (and overwrite was not asked for)"
            else:
                why = f"the storage service answered {status}"
        elif isinstance(exc, (az.ServiceRequestError, az.ServiceResponseError)):
            reason, why = "unreachable", "the storage endpoint could not be reached"
        return reason, why, code, status


class _BlockUploader(Uploader):
    def __init__(self, store: AzureStore, key: str, part: int, in_flight: int, overwrite: bool) -> None:
        super().__init__(store, key, part, in_flight)
        self.overwrite = overwrite
        self.client = store._client(key)
        # Random per upload: two uploads racing to one name never mix each other's blocks.
        self._tag = secrets.token_hex(6)

    def _id(self, index: int) -> str:
        return f"{self._tag}-{index:08d}"  # every id of a blob has the same length

    def send(self, index: int, data: bytearray) -> Any:
        # validate_content: Content-MD5 per block, checked by the service (read from the stream in chunks).
        # A stream (PartStream), not bytes: those go out in one send() that the connection timeout bounds
        # as a whole (over https too); 8 MiB blocks failed every try below ~0.8 MiB/s.
        self.client.stage_block(self._id(index), PartStream(data), length=len(data), validate_content=True)
        return index

    def commit(self, parts: List[Any], metadata: Dict[str, str]) -> None:
        blob = self.store._blob  # type: ignore[attr-defined]
        with self.store.calling(self.key, "committing"):
            self.client.commit_block_list(
                [blob.BlobBlock(self._id(i)) for i in parts], metadata=metadata,
                content_settings=blob.ContentSettings(content_type="application/octet-stream"),
                **({} if self.overwrite else {"if_none_match": "*"}))

    def abort(self) -> None:
        super().abort()  # nothing committed: no blob; staged blocks expire (no API deletes them)
