"""S3 (and S3-compatible stores): multipart upload, parts sent as they fill, completed once.

Credentials, region and endpoint come from botocore's default chain only: the environment
(``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``), the shared config and credentials files, container and
instance roles; ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3`` for S3-compatible stores.
"""
from __future__ import annotations

import secrets
from typing import Any, Dict, List, Optional, Tuple

from ..remote import RemoteTarget
from ..errors import RemoteDestinationError
from . import Listed, PartStream, Store, Uploader, need
from .quiet import quiet


class S3Store(Store):
    max_parts = 10_000

    def __init__(self, target: RemoteTarget) -> None:
        self.target = target
        self._boto3 = need("boto3", target)
        self._clients: Dict[str, Any] = {}
        #: One boto3 session for the store's clients: each session parses S3's service model again (about
        #: 13 MiB of peak RSS a client, which the 100 MiB bound of docs/egress.md has no room for).
        self._session: Any = None

    #: Tries per request (botocore's total_max_attempts: its max_attempts counts retries only, one more
    #: try each) and timeouts, per use. Bounded retries (standard mode: exponential backoff with jitter,
    #: capped at 20 s). The probe tries once and the abort of a failed upload twice, with short timeouts:
    #: a refusal or an abort on the way out must not hold dumplib for minutes on a store that stalls, and
    #: an abort lost to one transient error leaves a pending upload (docs/egress.md says how to clear it).
    _USES = {"data": (4, 10, 60), "probe": (1, 5, 15), "abort": (2, 5, 15)}

    def _s3(self, use: str = "data") -> Any:
        if use not in self._clients:
            Config = need("botocore.config", self.target).Config
            tries, connect, read = self._USES[use]
            cfg = Config(retries={"mode": "standard", "total_max_attempts": tries}, connect_timeout=connect,
                         read_timeout=read)
            with quiet():
                if self._session is None:
                    self._session = self._boto3.session.Session()
                self._clients[use] = self._session.client("s3", config=cfg)
        return self._clients[use]

    def probe(self, prefix: str) -> str:
        t = self.target
        name = f"{prefix}.dumplib-probe-{secrets.token_hex(8)}"
        with self.calling(prefix or None, "cannot write to"):
            s3 = self._s3("probe")
            # Proves s3:PutObject on the prefix and s3:AbortMultipartUpload (which a failed upload
            # needs); leaves nothing: no object, no pending upload.
            up = s3.create_multipart_upload(Bucket=t.container, Key=name)
        try:
            with self.calling(name, "cannot abort an upload to"):
                s3.abort_multipart_upload(Bucket=t.container, Key=name, UploadId=up["UploadId"])
        except RemoteDestinationError as exc:
            # Refused: but the probe's own (empty) upload is now pending, and these credentials cannot
            # remove it. Say so, and what clears it, rather than leave it unmentioned.
            raise RemoteDestinationError(
                f"{exc.message}: a failed dump could not abort its upload either (s3:AbortMultipartUpload is"
                f" needed); the probe's empty upload to {t.display(name)} stays pending until the bucket's"
                " AbortIncompleteMultipartUpload lifecycle rule clears it (docs/egress.md)",
                url=exc.url, store="s3", reason=exc.reason, service_code=exc.service_code,
                status=exc.status) from None
        return name

    def uploader(self, key: str, part: int, in_flight: int, overwrite: bool) -> Uploader:
        return _MultipartUploader(self, key, part, in_flight, overwrite)

    def put_small(self, key: str, data: bytes, overwrite: bool) -> None:
        with self.calling(key, "uploading to"):
            self._s3().put_object(Bucket=self.target.container, Key=key, Body=data, ContentType="application/json",
                                  **({} if overwrite else {"IfNoneMatch": "*"}))

    def delete(self, key: str) -> None:
        with self.calling(key, "deleting"):
            self._s3().delete_object(Bucket=self.target.container, Key=key)

    def exists(self, key: str) -> Optional[bool]:
        ClientError = need("botocore.exceptions", self.target).ClientError
        try:
            with quiet():
                self._s3().head_object(Bucket=self.target.container, Key=key)
            return True
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return False if status == 404 else None
        except Exception:
            return None

    def listing(self, prefix: str, limit: int) -> List[Listed]:
        out: List[Listed] = []
        with self.calling(prefix, "listing"):
            pages = self._s3().get_paginator("list_objects_v2").paginate(
                Bucket=self.target.container, Prefix=prefix, Delimiter="/")
            for page in pages:
                out += [Listed(o["Key"], int(o["Size"]), o["ETag"]) for o in page.get("Contents", ())]
                # Sub-prefixes count too: the listing's cost is what bounds it, whatever the names are.
                out += [Listed(p["Prefix"], 0, "") for p in page.get("CommonPrefixes", ())]
                if len(out) >= limit:
                    break
        return out[:limit]

    def get_small(self, key: str, limit: int) -> Optional[Tuple[bytes, str]]:
        try:
            with self.calling(key, "reading"):
                r = self._s3().get_object(Bucket=self.target.container, Key=key, Range=f"bytes=0-{limit}")
                return r["Body"].read(limit + 1), r["ETag"]
        except RemoteDestinationError as exc:
            if exc.service_code in ("NoSuchKey", "InvalidRange") or exc.status == 404:
                return None
            raise

    def still_ours(self, listed: Listed, sha256: str) -> bool:
        # S3's listing carries no metadata, and the sha256 is a tag written after the commit (metadata is
        # fixed when an upload starts): an object replaced since (same name, same size) has not got it.
        # Without s3:GetObjectTagging, or where tagging was refused at the write, nothing is deleted.
        try:
            with self.calling(listed.key, "reading the tags of"):
                tags = self._s3().get_object_tagging(Bucket=self.target.container, Key=listed.key)
        except RemoteDestinationError:
            return False
        return {t.get("Key"): t.get("Value") for t in tags.get("TagSet", [])}.get("dumplib-sha256") == sha256

    def delete_if(self, key: str, etag: str) -> bool:
        # DeleteObject with If-Match: the object is deleted only while it is the one retention checked
        # (a 412 when someone replaced it since). Stores that ignore the header delete unconditionally;
        # the sidecar's MAC and the listing's size were checked just before.
        try:
            with self.calling(key, "deleting"):
                self._s3().delete_object(Bucket=self.target.container, Key=key, IfMatch=etag)
            return True
        except RemoteDestinationError as exc:
            if exc.status in (404, 412) or exc.service_code in ("NoSuchKey", "PreconditionFailed"):
                return False
            raise

    def classify(self, exc: BaseException) -> Tuple[str, str, Optional[str], Optional[int]]:
        t = self.target
        bc = need("botocore.exceptions", t)

        status: Optional[int] = None
        code: Optional[str] = None
        reason, why = "unreachable", f"the store failed ({type(exc).__name__})"
        if isinstance(exc, bc.ClientError):
            err = exc.response.get("Error", {})
            code, status = err.get("Code"), exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket":
                reason, why = "no-container", f"the bucket {t.container!r} does not exist"
            elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
                          "TokenRefreshRequired", "InvalidClientTokenId", "AuthorizationHeaderMalformed"):
                reason, why = "bad-credentials", "the store refused the credentials"
            elif code in ("PreconditionFailed", "ConditionalRequestConflict") or status == 412:
                reason, why = "no-permission", "the object already exists (and overwrite was not asked for)"
            elif code in ("AccessDenied", "AllAccessDisabled") or status == 403:
                reason, why = "no-permission", "these credentials may not write to this bucket and prefix"
            elif status == 404:
                reason, why = "no-container", f"the bucket {t.container!r} was not found"
            else:
                why = f"the store answered {status}"
        elif isinstance(exc, (bc.NoCredentialsError, bc.PartialCredentialsError)):
            reason, why = "no-credentials", "no AWS credentials found (environment, profile, instance role)"
        elif isinstance(exc, bc.NoRegionError):
            reason, why = "no-credentials", "no AWS region configured (AWS_REGION or a profile)"
        elif isinstance(exc, (bc.EndpointConnectionError, bc.ConnectTimeoutError, bc.ConnectionClosedError,
                              bc.ReadTimeoutError)):
            reason, why = "unreachable", "the S3 endpoint could not be reached"
        return reason, why, code, status


class _MultipartUploader(Uploader):
    def __init__(self, store: S3Store, key: str, part: int, in_flight: int, overwrite: bool) -> None:
        super().__init__(store, key, part, in_flight)
        self.overwrite = overwrite
        self.bucket = store.target.container
        self.s3 = store._s3()
        self._abort_client = store._s3("abort")  # two tries, short timeouts: see S3Store._USES
        try:
            with quiet():
                r = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType="application/octet-stream",
                                                    ChecksumAlgorithm="SHA256")
        except Exception as exc:
            raise store.error(exc, key, "uploading to") from None
        self.upload_id: Optional[str] = r["UploadId"]

    def send(self, index: int, data: bytearray) -> Any:
        # A stream (PartStream): over plain http (MinIO on a LAN, moto) botocore hands bytes to urllib3 whole.
        # Over https the SHA256 trailer streams it anyway.
        r = self.s3.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=index + 1,
                                Body=PartStream(data), ChecksumAlgorithm="SHA256")
        return {k: v for k, v in (("PartNumber", index + 1), ("ETag", r["ETag"]),
                                  ("ChecksumSHA256", r.get("ChecksumSHA256"))) if v is not None}

    def commit(self, parts: List[Any], metadata: Dict[str, str]) -> None:
        with self.store.calling(self.key, "committing"):
            self.s3.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": parts},
                                              **({} if self.overwrite else {"IfNoneMatch": "*"}))
            self.upload_id = None
            # S3 metadata is fixed when the upload starts: the whole object's sha256 is known only now,
            # so it goes into the sidecar and, where s3:PutObjectTagging is granted, a tag.
            try:
                self.s3.put_object_tagging(Bucket=self.bucket, Key=self.key, Tagging={"TagSet": [
                    {"Key": f"dumplib-{k}", "Value": v} for k, v in metadata.items()]})
            except Exception:
                pass

    def abort(self) -> None:
        super().abort()
        if self.upload_id is not None:
            try:
                with quiet():
                    self._abort_client.abort_multipart_upload(Bucket=self.bucket, Key=self.key,
                                                              UploadId=self.upload_id)
            except Exception:
                pass  # unreachable: a lifecycle rule AbortIncompleteMultipartUpload cleans it (docs/egress.md)
            self.upload_id = None
