"""The S3 connection of the S3 sink: a boto3 client, and every failure turned into a one-line
`SinkError` that names bucket, operation and cause (never credentials), permanent where
retrying cannot help."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
)

from forwarder.sinks.base import SinkError

# Codes that retrying will not fix: the sweep fails at once (SinkError.permanent).
_PERMANENT = {
    "NoSuchBucket": "the bucket does not exist",
    "404": "the bucket does not exist",
    "AccessDenied": "access denied by the bucket or IAM policy",
    "403": "access denied by the bucket or IAM policy",
    "InvalidAccessKeyId": "the access key is not known",
    "SignatureDoesNotMatch": "the secret key does not match",
    "KMS.NotFoundException": "the KMS key does not exist",
}


class S3Transport:
    """One bucket's client, made lazily; `put` stores one object or raises SinkError."""

    def __init__(
        self,
        bucket: str,
        region: str | None,
        endpoint_url: str | None,
        put_extra: dict[str, str],
    ) -> None:
        self.bucket = bucket
        self.region = region
        self.endpoint_url = endpoint_url
        self.put_extra = put_extra
        self.client: Any = None

    def open(self) -> None:
        if self.client is not None:
            return
        config = Config(
            # One attempt per request: `Delivery` retries the batch or the flush (keys are
            # derived from content, so a retry overwrites) with the one policy, whose sleep wakes
            # on the stop signal; botocore's own retries would multiply that and sleep through
            # SIGTERM.
            retries={"total_max_attempts": 1, "mode": "standard"},
            connect_timeout=10,
            read_timeout=60,
            user_agent_extra="openai-audit-forwarder",
        )
        try:
            self.client = boto3.session.Session().client(
                "s3", region_name=self.region, endpoint_url=self.endpoint_url, config=config
            )
        except BotoCoreError as exc:
            raise self.error("CreateClient", exc) from exc

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def where(self) -> str:
        if self.client is None:
            return f"region {self.region or 'default'}, endpoint {self.endpoint_url or 'AWS'}"
        meta = self.client.meta
        return f"region {meta.region_name}, endpoint {meta.endpoint_url}"

    def error(self, operation: str, exc: Exception) -> SinkError:
        """One line naming bucket, operation and cause; never credentials."""
        head = f"s3 bucket {self.bucket}: {operation} failed"
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code") or "unknown")
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            reason = _PERMANENT.get(code)
            text = f"{head}: {code} (HTTP {status})"
            if reason:
                text += f": {reason}; retrying will not help until that is fixed"
            return SinkError(text, permanent=reason is not None)
        if isinstance(exc, NoCredentialsError):
            return SinkError(
                f"{head}: no AWS credentials found (environment, shared config/SSO, or "
                "instance/container role)",
                permanent=True,
            )
        if isinstance(exc, EndpointConnectionError):
            return SinkError(f"{head}: cannot connect ({self.where()})")
        first_line = str(exc).splitlines()[0] if str(exc) else ""
        return SinkError(f"{head}: {type(exc).__name__}: {first_line} ({self.where()})")

    def call(self, operation: str, method: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return method(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self.error(operation, exc) from exc

    def head_bucket(self) -> None:
        self.open()
        self.call("HeadBucket", self.client.head_bucket, Bucket=self.bucket)

    def put(self, key: str, body: bytes, content_type: str) -> None:
        self.open()
        self.call(
            "PutObject",
            self.client.put_object,
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType=content_type,
            **self.put_extra,
        )
