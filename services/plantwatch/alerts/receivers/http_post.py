"""POST a body to a receiver's URL and sort the answer into delivered, retryable and not.

The URL of a Slack or webhook receiver is itself a secret (the token is in its path), so
nothing here ever prints more of it than its origin (`https://hooks.slack.com`).
"""

from __future__ import annotations

import base64
import http.client
import ssl
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from plantwatch.alerts.notification import DeliveryError
from plantwatch.logs import mask

USER_AGENT = "plantwatch"
#: HTTP statuses worth trying again: the server is busy, timed out or broken for now.
RETRYABLE = frozenset({408, 425, 429})
#: How much of an error answer goes into the error message (for "invalid_payload"-style reasons).
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class Target:
    """Where to POST: parsed once when the receiver is built; `origin` is all that may be printed."""

    scheme: str
    host: str
    port: int | None
    path: str = field(repr=False)
    authorization: str | None = field(default=None, repr=False)

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.host}" + (f":{self.port}" if self.port else "")

    @classmethod
    def parse(cls, url: str, where: str) -> Target:
        """ValueError naming `where` (the URL left out: it is a secret) for what is no http(s) URL."""
        try:
            u = urlsplit(url.strip())
            port = u.port
        except ValueError as exc:
            raise ValueError(f"{where}: not a URL ({mask(str(exc))}); expected http(s)://host[:port]/path") from None
        if u.scheme not in ("http", "https") or not u.hostname:
            raise ValueError(
                f"{where}: the URL must start with http:// or https:// and name a host (the Secret holds {u.scheme or 'no'} scheme)"
            )
        auth = None
        if u.username is not None:
            auth = "Basic " + base64.b64encode(f"{unquote(u.username)}:{unquote(u.password or '')}".encode()).decode()
        return cls(u.scheme, u.hostname, port, (u.path or "/") + (f"?{u.query}" if u.query else ""), auth)


def post(target: Target, body: bytes, headers: dict[str, str], timeout: float, who: str) -> None:
    """POST `body`; return on a 2xx answer, else raise DeliveryError saying why (retryable for 408, 425, 429,
    5xx and network errors; not for other statuses, redirects or a certificate the client refuses).
    `timeout` bounds each network operation (connect, send, each read)."""
    conn_cls = http.client.HTTPSConnection if target.scheme == "https" else http.client.HTTPConnection
    conn = conn_cls(target.host, target.port, timeout=timeout)
    sent = {"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers}
    if target.authorization:
        sent["Authorization"] = target.authorization
    where = f"{who}: POST {target.origin}"
    try:
        conn.request("POST", target.path, body=body, headers=sent)
        resp = conn.getresponse()
        answer = resp.read(64 * 1024)
    except ssl.SSLCertVerificationError as exc:
        raise DeliveryError(f"{where}: the server's certificate was refused ({exc.verify_message})", retryable=False) from None
    except (OSError, http.client.HTTPException) as exc:
        raise DeliveryError(f"{where}: {type(exc).__name__}: {mask(str(exc)) or 'no answer'}", retryable=True) from None
    finally:
        conn.close()
    if 200 <= resp.status < 300:
        return
    said = mask(answer[:_ERROR_BODY_CHARS].decode("utf-8", "replace").strip())
    retryable = resp.status in RETRYABLE or resp.status >= 500
    hint = " (redirects are not followed: give the final URL)" if 300 <= resp.status < 400 else ""
    raise DeliveryError(f"{where} answered {resp.status} {resp.reason}{hint}" + (f": {said}" if said else ""), retryable=retryable)
