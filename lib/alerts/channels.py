"""What a delivery looks like on each channel, and sending it.

A delivery is one message carrying one or more notifications (a storm's are grouped), each a dict
`{"key", "kind": "opened" | "escalated" | "resolved", "event": <event payload>, "by", "note"}`.
Every message carries its idempotency key: the `Idempotency-Key` header on a webhook, the
`Message-ID` on an e-mail. A retry after a crash sends the same key and the same body, so a
receiver that saw the first try can recognise the second.
"""

from __future__ import annotations

import json
import smtplib
import ssl
import urllib.error
import urllib.request
from datetime import datetime, timezone
from email.message import EmailMessage
from urllib.parse import quote

from lib.alerts.settings import Channel

KIND_WORDS = {"opened": "anomaly", "escalated": "escalated", "resolved": "resolved"}
NTFY_PRIORITY = {"info": 3, "warning": 4, "critical": 5}
NTFY_TAGS = {"opened": "warning", "escalated": "rotating_light", "resolved": "white_check_mark"}
SLACK_MAX_BLOCKS = 45  # Slack takes 50 blocks per message: the rest are summed up in one line


class DeliveryError(Exception):
    """A try that failed. `permanent`: retrying cannot help (the receiver refused the request as
    malformed or unauthorised), so the delivery is marked failed at once."""

    def __init__(self, reason: str, permanent: bool = False):
        super().__init__(reason)
        self.permanent = permanent


def iso(ts_us: int | None) -> str:
    if ts_us is None:
        return ""
    return datetime.fromtimestamp(ts_us / 1e6, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def event_link(page_url: str, event: dict) -> str:
    """The page's Events view opened on this event (it charts the sensor around its time)."""
    return f"{page_url}/events?event={quote(event['id'], safe='')}"


def _num(x) -> str:
    return "—" if x is None else f"{x:g}"


def line(n: dict, page_url: str) -> str:
    """One notification as a line of text (e-mail body, Slack, ntfy, the JSON's `text`)."""
    e = n["event"]
    sev = e["severity"].upper()
    who = ", ".join(e["members"]) or "—"
    if n["kind"] == "resolved":
        how = f"by {n['by']}" if n.get("by") else "by itself"
        end = iso(e.get("closed_ts_us")) if not n.get("by") else iso(n.get("made_us"))
        text = (
            f"[resolved] {e['sensor']}: the {e['severity']} anomaly from {iso(e['start_ts_us'])} is resolved "
            f"{how}{' at ' + end if end else ''} ({e['n_flagged']} flagged, peak {_num(e['peak_value'])}; {who})"
        )
    else:
        verb = "anomaly" if n["kind"] == "opened" else "anomaly escalated"
        text = (
            f"[{sev}] {e['sensor']}: {verb} at {iso(e['start_ts_us'])}, value {_num(e['start_value'])}"
            f" (peak {_num(e['peak_value'])}), flagged by {who}"
        )
    return f"{text} {event_link(page_url, e)}"


def summary(notes: list[dict]) -> str:
    if len(notes) == 1:
        n = notes[0]
        return f"Vigie: {n['event']['sensor']} {KIND_WORDS[n['kind']]} ({n['event']['severity']})"
    sensors = sorted({n["event"]["sensor"] for n in notes})
    return f"Vigie: {len(notes)} notifications on {len(sensors)} sensor(s): {', '.join(sensors[:8])}" + (
        "…" if len(sensors) > 8 else ""
    )


def json_body(key: str, notes: list[dict], page_url: str) -> dict:
    """Vigie's own JSON: everything a receiver needs to act without opening the page."""
    out = []
    for n in notes:
        e = n["event"]
        out.append(
            {
                "key": n["key"],
                "kind": n["kind"],
                "event_id": e["id"],
                "sensor": e["sensor"],
                "severity": e["severity"],
                "time": iso(e["start_ts_us"]),
                "time_us": e["start_ts_us"],
                "value": e["start_value"],
                "peak_value": e["peak_value"],
                "peak_time": iso(e["peak_ts_us"]),
                "peak_score": e["peak_score"],
                "detectors": list(e["members"]),
                "n_flagged": e["n_flagged"],
                "closed_at": iso(e.get("closed_ts_us")) or None,
                "resolved_by": n.get("by"),
                "note": n.get("note"),
                "link": event_link(page_url, e),
                "text": line(n, page_url),
            }
        )
    return {"source": "vigie", "idempotency_key": key, "text": summary(notes), "notifications": out}


def slack_body(key: str, notes: list[dict], page_url: str) -> dict:
    """Slack's incoming-webhook shape (`text`, `blocks`), which Mattermost and others also take."""
    blocks = [
        {"type": "section", "text": {"type": "mrkdwn", "text": line(n, page_url)}} for n in notes[:SLACK_MAX_BLOCKS]
    ]
    if len(notes) > SLACK_MAX_BLOCKS:
        blocks.append(
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"and {len(notes) - SLACK_MAX_BLOCKS} more: see the Events page {page_url}/events",
                    }
                ],
            }
        )
    return {"text": summary(notes), "blocks": blocks}


def ntfy_body(key: str, notes: list[dict], page_url: str, topic: str) -> dict:
    """ntfy's JSON publishing shape (POST to the server's root URL)."""
    top = max(notes, key=lambda n: NTFY_PRIORITY[n["event"]["severity"]] if n["kind"] != "resolved" else 0)
    return {
        "topic": topic,
        "title": summary(notes),
        "message": "\n".join(line(n, page_url) for n in notes),
        "priority": NTFY_PRIORITY[top["event"]["severity"]] if top["kind"] != "resolved" else 3,
        "tags": sorted({NTFY_TAGS[n["kind"]] for n in notes}),
        "click": event_link(page_url, top["event"]),
    }


def _scrub(text: str, channel: Channel) -> str:
    for s in channel.secrets:
        text = text.replace(s, "***")
    return text


def send_webhook(channel: Channel, key: str, notes: list[dict], page_url: str, timeout: float) -> None:
    if channel.format == "slack":
        body = slack_body(key, notes, page_url)
    elif channel.format == "ntfy":
        body = ntfy_body(key, notes, page_url, channel.topic)
    else:
        body = json_body(key, notes, page_url)
    headers = {"Content-Type": "application/json", "Idempotency-Key": key, "User-Agent": "vigie-notifier"}
    if channel.token:
        headers["Authorization"] = f"Bearer {channel.token}"
    req = urllib.request.Request(channel.url, data=json.dumps(body).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            resp.read()
    except urllib.error.HTTPError as exc:
        # 4xx other than timeout/too-many: the receiver will refuse the same request again
        permanent = 400 <= exc.code < 500 and exc.code not in (408, 425, 429)
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", permanent) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryError(_scrub(f"{type(exc).__name__}: {reason}", channel)) from None


def email_message(channel: Channel, key: str, notes: list[dict], page_url: str) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = summary(notes)
    msg["From"] = channel.sender
    msg["To"] = ", ".join(channel.to)
    # The idempotency key: a retry carries the same Message-ID, which mail systems deduplicate on.
    msg["Message-ID"] = f"<{key}@vigie>"
    msg["X-Vigie-Idempotency-Key"] = key
    msg.set_content("\n\n".join(line(n, page_url) for n in notes) + "\n")
    return msg


def send_email(channel: Channel, key: str, notes: list[dict], page_url: str, timeout: float) -> None:
    context = ssl.create_default_context(cafile=channel.ca_file or None)
    try:
        if channel.security == "ssl":
            smtp = smtplib.SMTP_SSL(channel.host, channel.port, timeout=timeout, context=context)
        else:
            smtp = smtplib.SMTP(channel.host, channel.port, timeout=timeout)
        with smtp:
            if channel.security == "starttls":
                smtp.starttls(context=context)
            if channel.username:
                smtp.login(channel.username, channel.password)
            smtp.send_message(email_message(channel, key, notes, page_url))
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP login refused ({exc.smtp_code})", permanent=True) from None
    except smtplib.SMTPResponseException as exc:
        permanent = 500 <= exc.smtp_code < 600
        raise DeliveryError(_scrub(f"SMTP {exc.smtp_code} {exc.smtp_error!r}", channel), permanent) from None
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        raise DeliveryError(_scrub(f"{type(exc).__name__}: {exc}", channel)) from None


def send(channel: Channel, key: str, notes: list[dict], page_url: str, timeout: float = 10.0) -> None:
    """One try; DeliveryError says why it failed."""
    if channel.kind == "webhook":
        send_webhook(channel, key, notes, page_url, timeout)
    else:
        send_email(channel, key, notes, page_url, timeout)
