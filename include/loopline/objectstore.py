"""The object store (S3 or an S3-compatible server) as Loopline reaches it: through an Airflow connection.

Endpoint, credentials and region live in the ``aws`` connection named by ``storage.aws_conn_id`` (its extra
names ``endpoint_url`` for MinIO or moto), the same connection the S3 sensors use, never in ad-hoc ``AWS_*``
variables. The amazon provider's ``S3Hook`` reads it inside a task and outside one alike: Spark job CLIs and
tests find it as ``AIRFLOW_CONN_<ID>`` in the environment through Airflow's SDK connection lookup.

The trainer's image has no Airflow: where the amazon provider is not installed, the same functions use boto3's
and pyarrow's standard AWS environment (``AWS_*``, ``AWS_ENDPOINT_URL_S3``: what the training pod's Kubernetes
secret provides).

An unreachable server or refused credentials become :class:`ObjectStoreError`, naming the connection and the
endpoint so the operator knows what to check. It is an ordinary exception, so Airflow retries the task like
any other infrastructure failure.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

# Error codes with which S3 refuses a request's credentials rather than the request itself.
_REFUSED_CODES = frozenset(
    {
        "403",
        "AccessDenied",
        "AuthorizationHeaderMalformed",
        "ExpiredToken",
        "Forbidden",
        "InvalidAccessKeyId",
        "InvalidToken",
        "SignatureDoesNotMatch",
    }
)
# How pyarrow's S3 filesystem words the same two failures (its errors are plain OSErrors).
_ARROW_UNREACHABLE = ("AWS Error NETWORK_CONNECTION",)
_ARROW_REFUSED = (
    "AWS Error ACCESS_DENIED",
    "AWS Error EXPIRED_TOKEN",
    "AWS Error INVALID_ACCESS_KEY_ID",
    "AWS Error SIGNATURE_DOES_NOT_MATCH",
)


class ObjectStoreError(RuntimeError):
    """The object store is not reachable or refused the connection's credentials (an infrastructure error)."""


def conn_id_or_default(conn_id: str | None = None) -> str:
    """``conn_id``, or the configured ``storage.aws_conn_id``."""
    if conn_id:
        return conn_id
    from loopline.config import get_config

    return get_config().storage.aws_conn_id


def split(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` (or ``s3a://``) as ``(bucket, key)``."""
    bucket, _, key = uri.split("://", 1)[1].partition("/")
    return bucket, key


def client(conn_id: str | None = None) -> Any:
    """A boto3 S3 client built from the Airflow connection ``conn_id`` (default: ``storage.aws_conn_id``).

    Building one through the hook costs a connection lookup and a session, so it is kept per connection for the process.
    A connection given in the environment is part of the key: a changed ``AIRFLOW_CONN_<ID>`` gets a new client.
    """
    conn_id = conn_id_or_default(conn_id)
    return _client(conn_id, os.environ.get(f"AIRFLOW_CONN_{conn_id.upper()}"))


def _s3_hook_class() -> Any:
    """The amazon provider's ``S3Hook``, or None where it is not installed (the trainer's image)."""
    try:
        # imported here: the amazon provider is slow to import, and DAG files parse this module
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    except ImportError:
        return None
    return S3Hook


@lru_cache(maxsize=8)
def _client(conn_id: str, _environ_value: str | None) -> Any:
    hook = _s3_hook_class()
    if hook is None:
        import boto3

        return boto3.client("s3")  # the standard AWS environment, endpoint included
    return hook(aws_conn_id=conn_id).get_conn()


def describe(s3_client: Any, conn_id: str) -> str:
    """``S3 at <endpoint> (Airflow connection <id>)``: what an operator checks when a call fails."""
    return f"S3 at {s3_client.meta.endpoint_url} (Airflow connection {conn_id})"


def _unreachable(where: str, exc: BaseException) -> ObjectStoreError:
    return ObjectStoreError(f"{where} is not reachable: {exc}. Check that the server runs at that endpoint.")


def _refused(where: str, exc: BaseException) -> ObjectStoreError:
    return ObjectStoreError(
        f"{where} refused the credentials: {exc}. Check the connection's login/password (access key) and what "
        "they are allowed to read."
    )


def translate(exc: BaseException, s3_client: Any, conn_id: str) -> ObjectStoreError | None:
    """The :class:`ObjectStoreError` for an unreachable server or refused credentials; None for other errors."""
    import botocore.exceptions as boto

    where = describe(s3_client, conn_id)
    if isinstance(exc, boto.ConnectionError | boto.HTTPClientError):
        return _unreachable(where, exc)
    if isinstance(exc, boto.NoCredentialsError | boto.PartialCredentialsError | boto.CredentialRetrievalError):
        return ObjectStoreError(f"{where} has no usable credentials: {exc}. Check the connection's login/password.")
    if isinstance(exc, boto.ClientError) and exc.response.get("Error", {}).get("Code") in _REFUSED_CODES:
        return _refused(where, exc)
    if isinstance(exc, OSError) and not isinstance(exc, FileNotFoundError):  # pyarrow's S3 filesystem
        if any(marker in str(exc) for marker in _ARROW_UNREACHABLE):
            return _unreachable(where, exc)
        if any(marker in str(exc) for marker in _ARROW_REFUSED):
            return _refused(where, exc)
    return None


@contextmanager
def s3(conn_id: str | None = None) -> Iterator[Any]:
    """The S3 client of the connection; infrastructure failures inside the block raise :class:`ObjectStoreError`.

    Other errors (a missing key, say) pass through unchanged for the caller to handle inside the block. The
    same holds for pyarrow's S3 filesystem used inside the block (:func:`arrow_filesystem`).
    """
    conn_id = conn_id_or_default(conn_id)
    s3_client = client(conn_id)
    try:
        yield s3_client
    except Exception as exc:
        error = translate(exc, s3_client, conn_id)
        if error is None:
            raise
        raise error from exc


def arrow_filesystem(conn_id: str | None = None) -> Any:
    """A ``pyarrow.fs.S3FileSystem`` with the endpoint, credentials and region of the Airflow connection."""
    from pyarrow import fs

    hook_class = _s3_hook_class()
    if hook_class is None:  # no Airflow: the standard AWS environment, as boto3 reads it
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        scheme, sep, host = (endpoint or "").partition("://")
        return fs.S3FileSystem(**({"endpoint_override": host, "scheme": scheme} if sep else {}))
    conn_id = conn_id_or_default(conn_id)
    hook = hook_class(aws_conn_id=conn_id)
    kwargs: dict[str, Any] = {}
    with s3(conn_id) as s3_client:
        # Frozen now: pyarrow cannot refresh them, and a read takes seconds, not the hour they last.
        credentials = hook.get_session().get_credentials()
        frozen = credentials.get_frozen_credentials() if credentials else None
        region = s3_client.meta.region_name
    if frozen:
        kwargs |= {"access_key": frozen.access_key, "secret_key": frozen.secret_key, "session_token": frozen.token}
    endpoint = hook.conn_config.get_service_endpoint_url("s3")
    if endpoint:  # MinIO / moto; None: AWS's own endpoint for the region
        scheme, sep, host = endpoint.partition("://")
        kwargs["endpoint_override"] = host.rstrip("/") if sep else scheme
        kwargs["scheme"] = scheme if sep else "https"
    if region:
        kwargs["region"] = region
    return fs.S3FileSystem(**kwargs)
