"""The stack's generated secrets: created on first start into ``<state>/secrets.json`` (mode 0600) and handed to
each process through its environment or a private file, never its command line."""

from __future__ import annotations

import base64
import json
import os
import secrets

from loopline.runtime.supervisor import state_dir, write_private

# The stack's generated secrets: what both profiles use, then the cluster profile's own services.
SECRET_NAMES = (
    "SPARK_TOKEN",
    "MLFLOW_PASSWORD",
    "MLFLOW_ADMIN_PASSWORD",
    "MLFLOW_FLASK_SECRET",
    "PG_OWNER_PASSWORD",
    "PG_LOADER_PASSWORD",
    "PG_ANALYST_PASSWORD",
    "REDIS_PASSWORD",
    "SPARK_CLUSTER_SECRET",
    "S3_ACCESS_KEY",
    "S3_SECRET_KEY",
    "FERNET_KEY",
    "JWT_SECRET",
    "API_SECRET",
)


def stack_secrets() -> dict[str, str]:
    """The stack's secrets, generated on first start and kept in ``<state>/secrets.json`` (mode 0600)."""
    path = state_dir() / "secrets.json"
    known = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
    missing = [name for name in SECRET_NAMES if name not in known]
    for name in missing:
        # Fernet wants 32 url-safe base64 bytes; the others end up in URLs, so letters and digits only.
        known[name] = (
            base64.urlsafe_b64encode(os.urandom(32)).decode() if name == "FERNET_KEY" else secrets.token_hex(24)
        )
    if missing or (path.stat().st_mode & 0o077):
        write_private(path, json.dumps(known, indent=2))
    return known
