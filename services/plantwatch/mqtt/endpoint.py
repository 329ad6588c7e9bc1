"""Where a broker is and how to talk to it: an `mqtt://` or `mqtts://` URL, TLS settings and credentials, checked once.

TLS is always verified: the broker's certificate must chain to the CA file given (or,
without one, to the system's trust store) and name the host connected to. There is no
switch to turn that off. A client certificate (mutual TLS) is optional.

Credentials come from the URL (`mqtt://user:password@host`, kept for compatibility) or
from a user name and a password *file* (a Secret mounted in the cluster), read again at
every connection so that a rotated password is used at the next reconnect. Neither the
password nor its file's contents are ever in a repr, a log line or an error.
"""

from __future__ import annotations

import re
import ssl
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from plantwatch.logs import mask

#: Default ports by scheme (`tcp://` and `ssl://` are the names paho and mosquitto_sub also accept).
DEFAULT_PORTS = {"mqtt": 1883, "tcp": 1883, "mqtts": 8883, "ssl": 8883}
TLS_SCHEMES = ("mqtts", "ssl")
_EXPECTED = "expected mqtt://[user:password@]host[:1883] or mqtts://[user:password@]host[:8883]"


def _shown(url: str) -> str:
    """The URL as an error may quote it, the password replaced by `***`.

    Whatever stands before the URL's last `@` is credentials, whatever it holds (spaces, `/`,
    `@`, `://`): a well-formed `scheme://user:password@` keeps its scheme and user name, and
    anything else before the `@` is hidden whole, so that a malformed URL cannot show its password.
    """
    if "@" not in url:
        return mask(url)
    before, _, after = url.rpartition("@")
    scheme, sep, userinfo = before.partition("://")
    if sep and _SCHEME.fullmatch(scheme):
        user, colon, _ = userinfo.partition(":")
        return f"{scheme}{sep}{user}{':***' if colon else ''}@{after}"
    return f"***@{after}"


def _scrubbed(text: str, url: str) -> str:
    """`text` (a parser's message that may quote part of `url`) with the URL's credentials replaced by `***`."""
    if "@" not in url:
        return text
    before = url.rpartition("@")[0]
    userinfo = before.partition("://")[2] or before
    for secret in (before, userinfo, userinfo.partition(":")[2]):
        if secret:
            text = text.replace(secret, "***")
    return text


_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")


@dataclass(frozen=True)
class TlsSettings:
    """How to verify the broker (and, for mutual TLS, prove who we are): PEM file paths.

    `ca_file`: the CA(s) the broker's certificate must chain to; None: the system trust store.
    `cert_file` and `key_file`: a client certificate and its key (the key may also be in
    `cert_file`, then `key_file` is None). The files are read at every connection, so a
    renewed certificate is used at the next one.
    """

    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None

    def __post_init__(self) -> None:
        for name in ("ca_file", "cert_file", "key_file"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, Path(getattr(self, name)))
        if self.key_file is not None and self.cert_file is None:
            raise ValueError(f"a client key ({self.key_file}) without its certificate: give the client certificate too")

    @property
    def trust(self) -> str:
        """Whom the broker's certificate must be signed by, in words."""
        return f"the CA in {self.ca_file}" if self.ca_file else "any CA in the system trust store"

    def context(self) -> ssl.SSLContext:
        """A client context: certificate and host name verified, TLS 1.2 or later, our certificate when given.

        ValueError naming the file for one that is missing, unreadable or holds no usable PEM.
        """
        try:
            ctx = ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)
        except FileNotFoundError:
            raise ValueError(f"the broker's CA file {self.ca_file} does not exist") from None
        except OSError as exc:
            raise ValueError(f"the broker's CA file {self.ca_file}: {exc.strerror or exc}") from None
        except ssl.SSLError:
            raise ValueError(f"the broker's CA file {self.ca_file} holds no PEM certificate") from None
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert_file is not None:
            for what, path in (("client certificate", self.cert_file), ("client key", self.key_file)):
                if path is not None and not Path(path).is_file():
                    raise ValueError(f"the {what} file {path} does not exist")
            try:
                ctx.load_cert_chain(str(self.cert_file), str(self.key_file) if self.key_file else None)
            except (OSError, ssl.SSLError) as exc:
                key = self.key_file or self.cert_file
                raise ValueError(
                    f"the client certificate {self.cert_file} and key {key} cannot be used together "
                    f"(PEM files, the key unencrypted and matching the certificate): {getattr(exc, 'reason', None) or exc}"
                ) from None
        return ctx


@dataclass(frozen=True)
class Endpoint:
    """A broker's address, its TLS settings (None: plain MQTT) and the credentials to present.

    The password is kept out of repr (and so of logs); `str()` is the URL with it masked.
    """

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: TlsSettings | None = None
    #: A file holding the password (its first line), read at every connection; exclusive with `password`.
    password_file: Path | None = None

    @classmethod
    def parse(
        cls,
        url: str,
        tls: TlsSettings | None = None,
        username: str | None = None,
        password_file: str | Path | None = None,
    ) -> Endpoint:
        """The endpoint for `url`; `mqtts://` (default port 8883) speaks TLS, with `tls` or the system trust store.

        `username` and `password_file` are the credentials' other source (files mounted from a
        Secret). ValueError (the URL masked: it may carry a password) for a URL that is no
        mqtt(s)://[user:password@]host[:port], TLS settings for a plain URL, a password given
        twice, a password without a user name, or a file that cannot be read.
        """
        url = url if "://" in url else f"mqtt://{url}"  # host[:port] alone is plain MQTT; masked as a URL below
        try:
            u = urlparse(url)
            port = u.port
        except ValueError as exc:
            raise ValueError(f"broker URL {_shown(url)!r}: {_scrubbed(str(exc), url)} ({_EXPECTED})") from None
        if u.scheme not in DEFAULT_PORTS:
            raise ValueError(f"broker URL {_shown(url)!r}: scheme must be mqtt:// or mqtts:// ({_EXPECTED})")
        if u.path not in ("", "/") or u.query:
            raise ValueError(f"broker URL {_shown(url)!r}: a broker URL has no path or query ({_EXPECTED})")
        secure = u.scheme in TLS_SCHEMES
        if tls is not None and not secure:
            raise ValueError(
                f"broker URL {_shown(url)!r} is plain MQTT, but TLS settings (CA, client certificate) were given: "
                f"use mqtts://{u.hostname}:8883 (or the broker's TLS port)"
            )
        if username is not None and u.username is not None and username != u.username:
            raise ValueError(f"broker URL {_shown(url)!r} names user {u.username!r}, and user {username!r} was given too: give one")
        user = username if username is not None else u.username
        path = Path(password_file) if password_file is not None else None
        if path is not None and u.password is not None:
            raise ValueError(f"broker URL {_shown(url)!r} carries a password, and a password file was given too: give one")
        if (path is not None or u.password is not None) and not user:
            raise ValueError(f"broker URL {_shown(url)!r}: a password without a user name (give the user name too)")
        host, port = u.hostname or "127.0.0.1", port or DEFAULT_PORTS[u.scheme]
        endpoint = cls(host, port, user, u.password, (tls or TlsSettings()) if secure else None, path)
        endpoint.credentials()
        if endpoint.tls is not None:
            endpoint.tls.context()
        return endpoint

    @classmethod
    def of(cls, broker: str | Endpoint) -> Endpoint:
        """`broker` itself, or the endpoint its URL names."""
        return broker if isinstance(broker, Endpoint) else cls.parse(broker)

    @property
    def url(self) -> str:
        """The URL with the password masked as logs mask it (`mqtts://user:***@host:8883`): safe to print."""
        secret = ":***" if self.password is not None or self.password_file is not None else ""
        user = f"{self.username}{secret}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"

    def __str__(self) -> str:
        return self.url

    def credentials(self) -> tuple[str | None, str | None]:
        """(user name, password), the password file read now; ValueError naming the file if it cannot be read."""
        if self.password_file is None:
            return self.username, self.password
        try:
            lines = self.password_file.read_text().splitlines()
            password = lines[0].strip() if lines else ""
        except FileNotFoundError:
            raise ValueError(f"the broker's password file {self.password_file} does not exist") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"the broker's password file {self.password_file} cannot be read: {exc}") from None
        if not password:
            raise ValueError(f"the broker's password file {self.password_file} is empty")
        return self.username, password
