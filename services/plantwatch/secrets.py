"""Secrets by reference: a (Secret name, key) pair resolved to its value, never written in a spec.

In Kubernetes the operator mounts each Secret a plant references into the gateway
(`/etc/plantwatch/secrets/<secret>/<key>`, the kubelet's layout for a Secret volume);
`plantwatch up` reads the same Secret manifests from the plant folder (`data`, base64,
or `stringData`), so one plant folder runs in both places unchanged.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from pathlib import Path
from typing import Any

#: Where the gateway finds the Secrets the operator mounts.
MOUNT_DIR = "/etc/plantwatch/secrets"


class SecretMissing(LookupError):
    """A referenced Secret or key that is not there; the message says which and where it was looked for."""


class Secrets:
    """Secret values by (name, key), from Secret manifests and/or a directory of mounted Secrets."""

    def __init__(self, documents: Iterable[dict[str, Any]] = (), mount_dir: str | Path | None = None):
        self._values: dict[tuple[str, str], bytes] = {}
        self._mount_dir = Path(mount_dir) if mount_dir else None
        for doc in documents:
            if doc.get("kind") != "Secret" or str(doc.get("apiVersion", "")) != "v1":
                continue
            name = (doc.get("metadata") or {}).get("name")
            for key, value in (doc.get("data") or {}).items():
                try:
                    self._values[(name, key)] = base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError) as exc:
                    raise SecretMissing(f"Secret {name!r} key {key!r}: data is not base64 ({exc})") from None
            for key, value in (doc.get("stringData") or {}).items():
                self._values[(name, key)] = str(value).encode()

    def get(self, ref: Any) -> bytes:
        """The value of a `*SecretRef` ({name, key}); SecretMissing says what is missing and where it looked."""
        name, key = ref.name, ref.key
        if (name, key) in self._values:
            return self._values[(name, key)]
        if self._mount_dir is not None:
            path = self._mount_dir / name / key
            try:
                return path.read_bytes()
            except OSError:
                pass
        where = ["the plant's Secret manifests"] + ([f"{self._mount_dir}/{name}/{key}"] if self._mount_dir else [])
        raise SecretMissing(f"Secret {name!r} has no key {key!r} (looked in {' and '.join(where)})")

    def text(self, ref: Any) -> str:
        """`get` as UTF-8 text with surrounding whitespace (a trailing newline from `echo`) removed."""
        return self.get(ref).decode("utf-8").strip()
