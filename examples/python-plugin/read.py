"""Parses raw messages with Python's `email` package and filters them.

A message that cannot be read is reported with the reason, never fatal: one hostile
message does not stop the others of the page.
"""

import re
from datetime import date, datetime, timezone
from email import policy as email_policy
from email.headerregistry import AddressHeader
from email.parser import BytesParser
from email.utils import getaddresses, parsedate_to_datetime

from compose import html_to_text
from errors import invalid
from wit_world.imports import mailbox, types

MAX_BATCH = 1000
MAX_DEPTH = 64


class Unreadable(Exception):
    """A message left out of the page; the text says why."""


def parse_since(since):
    """`filter.since` as an aware UTC datetime: RFC 3339, or a day `YYYY-MM-DD`."""
    if since is None:
        return None
    try:
        if re.fullmatch(r"\d{4}-\d{2}-\d{2}", since):
            return datetime.combine(date.fromisoformat(since), datetime.min.time(), timezone.utc)
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", since):
            raise ValueError
        return datetime.fromisoformat(since.replace("z", "Z").replace("Z", "+00:00")).astimezone(timezone.utc)
    except ValueError:
        raise invalid("filter.since", f"`{since}` is not a date: write an RFC 3339 time such as 2026-01-31T08:00:00Z, or a day such as 2026-01-31")


def _addresses(msg, name):
    out = []
    for value in msg.get_all(name, []):
        try:
            header = value if isinstance(value, AddressHeader) else None
            pairs = [(a.display_name, a.addr_spec) for a in header.addresses] if header else getaddresses([str(value)])
        except Exception:
            pairs = getaddresses([str(value)])
        for display, spec in pairs:
            if spec and "@" in spec:
                out.append(types.Address(name=display or None, email=spec))
    return out


def _date(msg):
    value = msg.get("Date")
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(str(value))
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _leaves(part, depth=0):
    """The message's leaf parts in order; a `message/*` part is a leaf (an attachment)."""
    if depth > MAX_DEPTH:
        raise Unreadable(f"has multiparts nested deeper than {MAX_DEPTH}")
    if part.is_multipart() and part.get_content_maintype() == "multipart":
        for sub in part.get_payload():
            yield from _leaves(sub, depth + 1)
    else:
        yield part


def _is_body(part):
    return part.get_content_type() in ("text/plain", "text/html") and part.get_content_disposition() != "attachment"


def _content_bytes(part):
    if part.get_content_maintype() == "message":
        inner = part.get_payload()
        if isinstance(inner, list) and inner:
            return inner[0].as_bytes(policy=email_policy.SMTP)
        return part.get_payload(decode=True) or b""
    data = part.get_payload(decode=True)
    return data if data is not None else b""


def _text_of(part):
    try:
        return part.get_content()
    except (LookupError, UnicodeError):
        raw = part.get_payload(decode=True) or b""
        return raw.decode("utf-8", errors="replace")


def parse_bytes(data: bytes):
    msg = BytesParser(policy=email_policy.default).parsebytes(data)
    text = html = None
    attachments = []
    for leaf in _leaves(msg):
        if _is_body(leaf) and leaf.get_content_type() == "text/plain" and text is None:
            text = _text_of(leaf)
        elif _is_body(leaf) and leaf.get_content_type() == "text/html" and html is None:
            html = _text_of(leaf)
        else:
            attachments.append(leaf)
    return msg, text, html, attachments


def attachments_of(data: bytes):
    """The attachments of a raw message as `types.Attachment`s, in the order
    `read-mailbox` lists them."""
    _, _, _, parts = parse_bytes(data)
    out = []
    for i, part in enumerate(parts):
        out.append(types.Attachment(
            name=part.get_filename() or f"attachment-{i}",
            content_type=part.get_content_type(),
            data=_content_bytes(part),
            content_id=None,
        ))
    return out


def received(raw):
    msg, text, html, parts = parse_bytes(bytes(raw.data))
    senders = _addresses(msg, "From")
    if not senders:
        raise Unreadable("has no From address")
    message_id = msg.get("Message-ID")
    if message_id is not None:
        message_id = str(message_id).strip().strip("<>") or None
    subject = str(msg.get("Subject", "")).replace("\r\n", "").replace("\n", "")
    if text is None and html is not None:
        text = html_to_text(html)
    omitted = raw.content == mailbox.Content.WITHOUT_ATTACHMENTS
    infos = []
    if not omitted:
        for i, part in enumerate(parts):
            infos.append(types.AttachmentInfo(
                index=i,
                name=part.get_filename() or f"attachment-{i}",
                content_type=part.get_content_type(),
                size=len(_content_bytes(part)),
            ))
    return types.ReceivedMessage(
        id=raw.id, message_id=message_id, sender=senders[0], to=_addresses(msg, "To"),
        cc=_addresses(msg, "Cc"), date=_date(msg), subject=subject, text=text, html=html,
        attachments=infos, flags=list(raw.flags), size=raw.size, attachments_omitted=omitted,
    )


def matches(m, filter, since) -> bool:
    if filter.sender_contains is not None:
        needle = filter.sender_contains.lower()
        s = m.sender
        if needle not in s.email.lower() and needle not in (s.name or "").lower():
            return False
    if filter.subject_contains is not None and filter.subject_contains.lower() not in m.subject.lower():
        return False
    if filter.has_attachment is not None and filter.has_attachment != bool(m.attachments):
        return False
    if since is not None:
        if m.date is None or datetime.fromisoformat(m.date.replace("Z", "+00:00")) < since:
            return False
    if filter.unseen and "\\Seen" in m.flags:
        return False
    return True
