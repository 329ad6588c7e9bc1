"""The Email receiver: one multipart message (text and HTML) per notification, over SMTP with STARTTLS and AUTH.

`render` is pure (a Notification in, an EmailMessage out); `EmailReceiver.send` is the
only SMTP user. The Message-ID is derived from the notification key, so a message sent
again after a crash between sending and recording the send carries the same Message-ID
and mail systems that deduplicate by it (and people reading threads) see one message.
"""

from __future__ import annotations

import email.policy
import hashlib
import html
import logging
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import formatdate

from plantwatch.alerts.notification import AlertView, DeliveryError, Notification
from plantwatch.plant.model import AlertReceiver
from plantwatch.plant.specs import AlertReceiverEmail
from plantwatch.secrets import SecretMissing, Secrets

log = logging.getLogger(__name__)

#: Header carrying the notification key, for filters and for tracing a message back to the alert log.
KEY_HEADER = "X-Plantwatch-Notification-Key"
START_TLS_MODES = ("Required", "Opportunistic", "Disabled")
#: Nodes named in a subject before it says "…".
_SUBJECT_NODES = 3
#: Slack's colours for the same severities, so a plant's messages look alike everywhere.
_COLOURS = {"info": "#439fe0", "warning": "#daa038", "critical": "#d00000", "emergency": "#7b0000"}
_RESOLVED_COLOUR = "#2eb886"


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ts is not None else ""


def _value(alert: AlertView) -> str:
    if alert.value is None:
        return ""
    unit = alert.annotations.get("unit", "")
    return f"{alert.value:g} {unit}".strip()


def _threshold(alert: AlertView) -> str:
    threshold = alert.annotations.get("threshold", "")
    unit = alert.annotations.get("unit", "")
    try:
        float(threshold)
    except ValueError:
        return threshold
    return f"{threshold} {unit}".strip()


def _runbook(alert: AlertView) -> str | None:
    """The runbook URL when it is one a mail client may link to (http or https, never `javascript:`)."""
    url = alert.annotations.get("runbook", "")
    return url if url.startswith(("https://", "http://")) else None


def _distinct(values: list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def subject(n: Notification) -> str:
    """`[FIRING:5] machine-overtemperature (press-1, press-2, press-3 +2 more)`, or `[RESOLVED] …` when nothing still fires."""
    firing = n.firing
    shown = firing or n.alerts
    status = f"[FIRING:{len(firing)}]" if firing else "[RESOLVED]"
    if n.kind == "escalation":
        status = "[ESCALATION]" + status
    rules = ", ".join(_distinct([a.rule for a in shown]))
    nodes = _distinct([a.node for a in shown])
    # ASCII on purpose: a non-ASCII "…" makes the whole subject an RFC 2047 encoded word that some clients garble.
    listed = ", ".join(nodes[:_SUBJECT_NODES]) + (f" +{len(nodes) - _SUBJECT_NODES} more" if len(nodes) > _SUBJECT_NODES else "")
    return f"{status} {rules} ({listed})"


def _text_alert(a: AlertView) -> str:
    lines = [f"[{a.severity.upper()}] {a.rule} on {a.node} / {a.sensor}: {a.status}"]
    if a.summary:
        lines.append(f"  {a.summary}")
    equipment, location = a.labels.get("equipment", ""), a.labels.get("location", "")
    if equipment or location:
        lines.append(f"  equipment: {equipment or '-'}   location: {location or '-'}")
    if a.value is not None or a.annotations.get("threshold"):
        lines.append(f"  value: {_value(a) or '-'}   threshold: {_threshold(a) or '-'}")
    lines.append(f"  started: {_when(a.starts_at)}" + (f"   resolved: {_when(a.ends_at)}" if a.ends_at is not None else ""))
    if a.acked_by:
        lines.append(f"  acknowledged by: {a.acked_by}")
    if _runbook(a):
        lines.append(f"  runbook: {_runbook(a)}")
    return "\n".join(lines)


def text_body(n: Notification) -> str:
    head = f"{len(n.firing)} firing, {len(n.resolved)} resolved in plant {n.plant}"
    if n.kind == "escalation":
        head += " (escalated: not acknowledged in time)"
    elif n.kind == "repeat":
        head += " (still firing)"
    return head + "\n\n" + "\n\n".join(_text_alert(a) for a in n.alerts) + f"\n\n--\nPlantwatch, notification {n.key}\n"


def _html_row(a: AlertView) -> str:
    colour = _RESOLVED_COLOUR if a.status == "resolved" else _COLOURS.get(a.severity, "#888888")
    runbook = _runbook(a)
    rule = html.escape(a.rule)
    if runbook:
        rule = f'<a href="{html.escape(runbook, quote=True)}">{rule}</a>'
    where = " · ".join(_distinct([a.labels.get("equipment", ""), a.labels.get("location", "")]))
    ack = f"<br><small>acknowledged by {html.escape(a.acked_by)}</small>" if a.acked_by else ""
    cells = [
        f'<td style="border-left:6px solid {colour};padding:4px 8px"><b>{html.escape(a.severity.upper())}</b>'
        f"<br><small>{html.escape(a.status)}</small></td>",
        f"<td>{rule}</td>",
        f"<td>{html.escape(a.node)}<br><small>{html.escape(where)}</small></td>",
        f"<td>{html.escape(a.sensor)}</td>",
        f"<td><b>{html.escape(_value(a))}</b></td>",
        f"<td>{html.escape(_threshold(a))}</td>",
        f"<td>{html.escape(_when(a.starts_at))}</td>",
        f"<td>{html.escape(_when(a.ends_at))}</td>",
        f"<td>{html.escape(a.summary)}{ack}</td>",
    ]
    return "<tr>" + "".join(cells) + "</tr>"


def html_body(n: Notification) -> str:
    heads = ["Severity", "Rule", "Node", "Sensor", "Value", "Threshold", "Started", "Resolved", "Summary"]
    header = "".join(f'<th style="text-align:left;padding:4px 8px">{h}</th>' for h in heads)
    rows = "\n".join(_html_row(a) for a in n.alerts)
    return (
        '<!DOCTYPE html><html><body style="font-family:sans-serif">'
        f"<h2>{html.escape(subject(n))}</h2>"
        f"<p>{html.escape(text_body(n).split(chr(10), 1)[0])}</p>"
        f'<table style="border-collapse:collapse" cellpadding="4"><tr>{header}</tr>{rows}</table>'
        f"<p><small>Plantwatch, notification {html.escape(n.key)}</small></p></body></html>"
    )


def message_id(key: str, sender: str) -> str:
    """A Message-ID that depends only on the notification key (and the sender's domain), so a resend repeats it."""
    domain = sender.rpartition("@")[2] or "plantwatch.invalid"
    return f"<plantwatch.{hashlib.sha256(key.encode()).hexdigest()[:40]}@{domain}>"


#: RFC 5322's hard line limit instead of its advisory 78: the stdlib folds a subject that starts with "[" onto a
#: continuation line, which leaves a leading space in the subject that clients show.
_POLICY = email.policy.SMTP.clone(max_line_length=998)


def render(n: Notification, sender: str, to: tuple[str, ...]) -> EmailMessage:
    """The whole message: headers, a text/plain part and a text/html alternative."""
    msg = EmailMessage(policy=_POLICY)
    msg["Subject"] = subject(n)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Date"] = formatdate(n.created_at, usegmt=True)
    msg["Message-ID"] = message_id(n.key, sender)
    msg[KEY_HEADER] = n.key
    # RFC 3834: out-of-office and other auto-responders must not answer a machine's mail.
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(text_body(n))
    msg.add_alternative(html_body(n), subtype="html")
    return msg


def _smarthost(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"email smarthost {text!r}: expected host:port, e.g. smtp.plant.example:587")
    return host.strip("[]"), int(port)


def _answer(exc: smtplib.SMTPResponseException) -> str:
    text = exc.smtp_error.decode(errors="replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
    return f"{exc.smtp_code} {text}"


class EmailReceiver:
    """Sends each notification as one email to `spec.to` through `spec.smarthost`."""

    kind = "Email"

    def __init__(self, name: str, spec: AlertReceiverEmail, secrets: Secrets):
        self.name = name
        self._host, self._port = _smarthost(spec.smarthost)
        self._sender, self._to = spec.from_, tuple(spec.to)
        self._start_tls = spec.start_tls or "Required"
        if self._start_tls not in START_TLS_MODES:
            raise ValueError(f"email receiver {name}: startTLS {self._start_tls!r}: expected one of {', '.join(START_TLS_MODES)}")
        # Secrets are read here so a missing one stops start-up instead of the first alert.
        self._tls = ssl.create_default_context(cadata=secrets.text(spec.ca_secret_ref) if spec.ca_secret_ref else None)
        self._username = spec.username
        self._password = secrets.text(spec.password_secret_ref) if spec.password_secret_ref else None
        if (self._username is None) != (self._password is None):
            raise ValueError(f"email receiver {name}: username and passwordSecretRef go together; give both or neither")

    def _where(self) -> str:
        return f"email receiver {self.name} ({self._host}:{self._port})"

    def send(self, notification: Notification, timeout: float) -> None:
        msg = render(notification, self._sender, self._to)
        try:
            with smtplib.SMTP(self._host, self._port, timeout=timeout) as smtp:
                self._secure(smtp)
                self._login(smtp)
                refused = smtp.send_message(msg, self._sender, list(self._to))
        except DeliveryError:
            raise
        except smtplib.SMTPRecipientsRefused as exc:
            answers = "; ".join(f"{rcpt}: {code} {text.decode(errors='replace')}" for rcpt, (code, text) in exc.recipients.items())
            temporary = all(400 <= code < 500 for code, _ in exc.recipients.values())
            raise DeliveryError(f"{self._where()}: every recipient was refused: {answers}", retryable=temporary) from None
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"{self._where()}: the server answered {_answer(exc)}", retryable=400 <= exc.smtp_code < 500) from None
        except ssl.SSLCertVerificationError as exc:
            raise DeliveryError(
                f"{self._where()}: the server's certificate was not accepted ({exc.verify_message}); "
                "caSecretRef names the CA that signed it, or the system store is used",
                retryable=False,
            ) from None
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{self._where()}: {type(exc).__name__}: {exc}", retryable=True) from None
        if refused:
            # Delivered to the others; sending again would duplicate it for them, so this is only said.
            log.warning(
                "%s: refused recipients %s",
                self._where(),
                ", ".join(f"{r} ({c} {t.decode(errors='replace')})" for r, (c, t) in refused.items()),
            )

    def _secure(self, smtp: smtplib.SMTP) -> None:
        smtp.ehlo()
        if self._start_tls == "Disabled":
            return
        if not smtp.has_extn("starttls"):
            if self._start_tls == "Required":
                raise DeliveryError(
                    f"{self._where()}: the server does not offer STARTTLS and startTLS is Required; "
                    "nothing was sent (Opportunistic or Disabled would send in clear text)",
                    retryable=False,
                )
            return
        # Opportunistic verifies too: falling back to clear text after a failed handshake is what an attacker would want.
        smtp.starttls(context=self._tls)
        smtp.ehlo()

    def _login(self, smtp: smtplib.SMTP) -> None:
        if self._username is None:
            return
        if not smtp.has_extn("auth"):
            tls = "" if self._start_tls == "Required" else " (some servers offer AUTH only after STARTTLS)"
            raise DeliveryError(f"{self._where()}: the server offers no AUTH, but a username is configured{tls}", retryable=False)
        try:
            smtp.login(self._username, self._password)
        except smtplib.SMTPAuthenticationError as exc:
            raise DeliveryError(
                f"{self._where()}: login as {self._username!r} refused: the server answered {_answer(exc)}",
                retryable=400 <= exc.smtp_code < 500,
            ) from None

    def close(self) -> None:
        """Nothing to release: each send opens and closes its own connection."""


def build(receiver: AlertReceiver, secrets: Secrets, broker_url: str | None) -> EmailReceiver:
    spec = receiver.spec.email
    if spec is None:
        raise ValueError(f"AlertReceiver {receiver.name!r}: type Email needs spec.email")
    try:
        return EmailReceiver(receiver.name, spec, secrets)
    except SecretMissing as exc:
        raise SecretMissing(f"AlertReceiver {receiver.name!r} (Email): {exc}") from None
