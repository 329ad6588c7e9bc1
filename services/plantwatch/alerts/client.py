"""The alerts API from the caller's side (`plantwatch alerts`): straight to a URL, or to a Kubernetes
deployment's gateway through the API server's service proxy.

Through the proxy, the caller's kubeconfig authenticates to the API server (it needs `get` and
`create` on `services/proxy` in the namespace) and the API server consumes the Authorization
header, so the alerts API's token goes in X-Plantwatch-Authorization instead.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any, Protocol
from urllib.parse import quote, urlencode

from plantwatch.alerts.api import PROXY_AUTH_HEADER

#: The gateway's Service and port name as the operator renders them (plantwatch_operator.render:
#: GATEWAY, and the port named "http"; tests/unit/test_alerts_client.py holds the two together).
GATEWAY_SERVICE, GATEWAY_PORT_NAME = "plantwatch-gateway", "http"


class ClientError(Exception):
    """The API refused (status and its message), or could not be reached (status None)."""

    def __init__(self, status: int | None, message: str):
        super().__init__(message)
        self.status = status


def alerts_path(status: str | None = None) -> str:
    return "/api/v1/alerts" + (f"?{urlencode({'status': status})}" if status else "")


def alert_path(fingerprint: str, action: str | None = None) -> str:
    """/api/v1/alerts/<fingerprint, its slashes encoded>[/action]."""
    return f"/api/v1/alerts/{quote(fingerprint, safe='')}" + (f"/{action}" if action else "")


def silences_path(silence_id: str | None = None) -> str:
    return "/api/v1/silences" + (f"/{quote(silence_id, safe='')}" if silence_id else "")


def proxy_path(namespace: str, path: str) -> str:
    """`path` on the gateway Service in `namespace`, through the API server's service proxy."""
    return f"/api/v1/namespaces/{quote(namespace, safe='')}/services/{GATEWAY_SERVICE}:{GATEWAY_PORT_NAME}/proxy{path}"


def _answer(status: int, raw: bytes, where: str) -> Any:
    try:
        body = json.loads(raw) if raw else None
    except ValueError:
        body = None
    if 200 <= status < 300:
        return body
    if isinstance(body, dict) and isinstance(body.get("error") or body.get("message"), str):  # ours, or a Kubernetes Status
        message = body.get("error") or body["message"]
    else:
        message = raw.decode("utf-8", "replace").strip()[:500]
    raise ClientError(status, f"{where} answered {status}: {message}")


class Transport(Protocol):
    def request(self, method: str, path: str, body: Any = None) -> Any: ...


class Direct:
    """The API at a base URL (a local `plantwatch up`, or a port-forwarded gateway)."""

    def __init__(self, url: str, token: str | None, timeout_s: float = 10.0):
        self.url = url.rstrip("/")
        self._token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"Accept": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        data = None
        if body is not None:
            data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
        req = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as r:
                return _answer(r.status, r.read(), self.url)
        except urllib.error.HTTPError as exc:
            return _answer(exc.code, exc.read(), self.url)
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ClientError(
                None, f"cannot reach {self.url} ({reason}); is `plantwatch up` running there? (--url to point elsewhere)"
            ) from None


class Kube:
    """The API of the gateway in `namespace`, through the API server's service proxy, as the kubeconfig's user."""

    def __init__(self, namespace: str, token: str | None, timeout_s: float = 10.0):
        self.namespace = namespace
        self._token = token
        self.timeout_s = timeout_s

    def request(self, method: str, path: str, body: Any = None) -> Any:
        from kubernetes.client.rest import ApiException

        from plantwatch.kube import api_client

        client = api_client()
        headers = {"Accept": "application/json", "Content-Type": "application/json"}
        if self._token:
            headers[PROXY_AUTH_HEADER] = f"Bearer {self._token}"
        where = f"the gateway Service {self.namespace}/{GATEWAY_SERVICE} (through {client.configuration.host})"
        try:
            params = client.param_serialize(
                method, proxy_path(self.namespace, path), header_params=headers, body=body, auth_settings=["BearerToken"]
            )
            r = client.call_api(*params, _request_timeout=self.timeout_s)
            return _answer(r.status, r.read(), where)
        except ApiException as exc:
            if not exc.status:
                raise ClientError(None, f"cannot reach {where}: {exc.reason}") from None
            return _answer(exc.status, (exc.body or b"") if isinstance(exc.body, bytes) else str(exc.body or "").encode(), where)
        except OSError as exc:
            raise ClientError(None, f"cannot reach {where}: {exc}") from None


def kube_namespace() -> str:
    """The kubeconfig's current context's namespace, else `default`."""
    from kubernetes import config

    try:
        _, current = config.list_kube_config_contexts()
    except (config.ConfigException, OSError):
        return "default"
    return (current or {}).get("context", {}).get("namespace") or "default"
