"""Where a broker is: an `mqtt://[user:password@]host[:port]` URL parsed once, for both clients."""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import urlparse

from plantwatch.logs import mask


@dataclass(frozen=True)
class Endpoint:
    """A broker's address and the credentials to present (the password kept out of repr, and so of logs)."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    @classmethod
    def parse(cls, url: str) -> Endpoint:
        """ValueError (the URL masked: it may carry a password) for what is no mqtt://[user:password@]host[:port]."""
        try:
            u = urlparse(url if "://" in url else f"mqtt://{url}")
            port = u.port
        except ValueError as exc:
            raise ValueError(f"broker URL {mask(url)!r}: {exc} (expected mqtt://[user:password@]host[:port])") from None
        if u.scheme not in ("mqtt", "tcp"):
            raise ValueError(f"broker URL {mask(url)!r}: scheme must be mqtt:// (e.g. mqtt://127.0.0.1:1883)")
        return cls(u.hostname or "127.0.0.1", port or 1883, u.username, u.password)
