"""Validates an outgoing message against the account's policy and composes it.

The policy of this plugin differs from the built-in one on purpose, to show that the
contract leaves it to the plugin:

- every message has a plain-text part: when the step gives only HTML, the text is
  derived from it;
- the text ends with a signature block (RFC 3676 `-- ` separator) naming the account;
- the message carries `X-Flowmail-Plugin: python-example`.

Addresses, header text, attachment sizes and the sender the account requires are
checked as the contract says, each failure naming the field.
"""

import re
import secrets
from datetime import datetime, timezone
from email import policy as email_policy
from email.headerregistry import Address as HeaderAddress
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import format_datetime
from html.parser import HTMLParser

from errors import invalid

SIGNATURE = "-- \nSent by flowmail through the account `{account}`.\n"

# Headers the composer writes itself; a step may not set them.
RESERVED = {
    "from", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "sender",
    "mime-version", "return-path", "received",
}

# An addr-spec with a dot-atom local part and a domain of LDH labels (or Unicode
# labels, sent as IDNA); quoted local parts are refused with a clear reason.
ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
LOCAL = re.compile(rf"^{ATOM}(\.{ATOM})*$")
LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def check_text(field: str, value: str) -> None:
    """Header text: any Unicode without CR, LF or NUL."""
    for ch, name in (("\r", "CR"), ("\n", "LF"), ("\0", "NUL")):
        if ch in value:
            raise invalid(field, f"contains a {name}, which would start a new header line; remove line breaks from it")


def check_address(field: str, address) -> None:
    if address.name is not None:
        check_text(f"{field}.name", address.name)
    email = address.email
    check_text(f"{field}.email", email)
    if email.count("@") != 1:
        raise invalid(f"{field}.email", f"`{email}` is not an address: write it as local-part@domain")
    local, domain = email.split("@")
    if not local or len(local) > 64 or not LOCAL.match(local):
        raise invalid(
            f"{field}.email",
            f"`{email}` has an invalid local part: use letters, digits and !#$%&'*+/=?^_`{{|}}~.- (at most 64), without a leading, trailing or doubled dot",
        )
    try:
        ascii_domain = domain.encode("idna").decode("ascii")
    except UnicodeError:
        raise invalid(f"{field}.email", f"`{email}` has a domain that is not a valid host name")
    labels = ascii_domain.split(".")
    if len(ascii_domain) > 253 or len(labels) < 2 or not all(LABEL.match(l) for l in labels):
        raise invalid(
            f"{field}.email",
            f"`{email}` has an invalid domain: use a host name such as example.com (letters, digits and hyphens, at least two labels)",
        )
    if len(email.encode()) > 254:
        raise invalid(f"{field}.email", f"`{email}` is longer than 254 bytes")


def sender_of(message, policy):
    if message.sender is not None:
        return message.sender
    if policy.default_sender is not None:
        return policy.default_sender
    raise invalid("message.sender", "no From address: set `sender` on the step, or `from` on the account")


def check_attachment(field: str, a, policy) -> None:
    check_text(f"{field}.name", a.name)
    if not a.name.strip():
        raise invalid(f"{field}.name", "is empty; give the file a name")
    check_text(f"{field}.content_type", a.content_type)
    if not re.match(r"^[A-Za-z0-9!#$&^_.+-]+/[A-Za-z0-9!#$&^_.+-]+$", a.content_type):
        raise invalid(f"{field}.content_type", f"`{a.content_type}` is not a MIME type: write it as type/subtype, for example application/pdf")
    if a.content_id is not None:
        check_text(f"{field}.content_id", a.content_id)
    if len(a.data) > policy.max_attachment_bytes:
        raise invalid(
            f"{field}.data",
            f"is {len(a.data)} bytes, over the account's limit of {policy.max_attachment_bytes} bytes per attachment; send a smaller file or a link",
        )


def validate(message, sender, policy) -> None:
    check_address("message.sender", sender)
    required = policy.required_sender
    if required is not None and sender.email.lower() != required.lower():
        raise invalid(
            "message.sender",
            f"this account may only send as {required} (OAuth2 accounts send as their own user); set sender to {required} or use another account",
        )
    for name in ("to", "cc", "bcc", "reply_to"):
        for i, a in enumerate(getattr(message, name)):
            check_address(f"message.{name}[{i}]", a)
    if not (message.to or message.cc or message.bcc):
        raise invalid("message.to", "no recipients: give at least one in to, cc or bcc")
    check_text("message.subject", message.subject)
    for i, h in enumerate(message.extra_headers):
        field = f"message.extra_headers[{i}]"
        if not h.name or not all(33 <= ord(c) <= 126 and c != ":" for c in h.name):
            raise invalid(f"{field}.name", f"`{h.name}` is not a header name: use printable ASCII without spaces or `:`")
        lower = h.name.lower()
        if lower in RESERVED or lower.startswith("content-") or lower == "x-flowmail-plugin":
            raise invalid(f"{field}.name", f"`{h.name}` is written by the plugin itself; use the message field instead")
        check_text(f"{field}.value", h.value)
    for i, a in enumerate(message.attachments):
        check_attachment(f"message.attachments[{i}]", a, policy)


class _Text(HTMLParser):
    """The text of an HTML body, for the plain-text part this policy requires."""

    BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol", "table"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self.skip += 1
        elif tag == "li":
            self.out.append("\n- ")
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style") and self.skip:
            self.skip -= 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str) -> str:
    parser = _Text()
    parser.feed(html)
    parser.close()
    lines = [" ".join(l.split()) for l in "".join(parser.out).splitlines()]
    text = "\n".join(lines)
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _header_address(a) -> HeaderAddress:
    local, domain = a.email.split("@")
    return HeaderAddress(display_name=a.name or "", username=local, domain=domain)


def _split_type(content_type: str):
    maintype, subtype = content_type.lower().split("/", 1)
    return maintype, subtype


def _attach(target: EmailMessage, a, related: bool) -> None:
    maintype, subtype = _split_type(a.content_type)
    extra = {}
    if a.content_id is not None:
        extra["cid"] = f"<{a.content_id}>"
    if maintype == "message" and subtype == "rfc822":
        # RFC 2046 forbids base64 for message/*: attach it as a message, sent as text.
        inner = BytesParser(policy=email_policy.SMTP).parsebytes(bytes(a.data))
        target.add_attachment(inner, filename=a.name)
        return
    if maintype in ("message", "multipart"):
        # Other message/* and multipart/* types travel unchanged as bytes, labelled as
        # such, rather than as a base64 body their type forbids.
        maintype, subtype = "application", "octet-stream"
    add = target.add_related if related else target.add_attachment
    disposition = "inline" if related else "attachment"
    add(bytes(a.data), maintype=maintype, subtype=subtype, filename=a.name, disposition=disposition, **extra)


def compose(account: str, message, sender, policy, forwarded):
    """The message's bytes (CRLF line ends), its envelope and its Message-ID."""
    msg = EmailMessage(policy=email_policy.SMTP)
    msg["From"] = _header_address(sender)
    if message.to:
        msg["To"] = [_header_address(a) for a in message.to]
    if message.cc:
        msg["Cc"] = [_header_address(a) for a in message.cc]
    if message.reply_to:
        msg["Reply-To"] = [_header_address(a) for a in message.reply_to]
    msg["Subject"] = message.subject
    msg["Date"] = format_datetime(datetime.now(timezone.utc))
    domain = sender.email.split("@")[1].encode("idna").decode("ascii")
    message_id = f"{secrets.token_hex(16)}@{domain}"
    msg["Message-ID"] = f"<{message_id}>"
    msg["X-Flowmail-Plugin"] = "python-example"
    for h in message.extra_headers:
        msg[h.name] = h.value

    text = message.text
    if text is None:
        text = html_to_text(message.html) if message.html is not None else ""
    if not text.endswith("\n"):
        text += "\n"
    text += "\n" + SIGNATURE.format(account=account)
    msg.set_content(text, subtype="plain", charset="utf-8")

    attachments = list(message.attachments) + [a for _, a in forwarded]
    inline = [a for a in attachments if a.content_id is not None and message.html is not None]
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html", charset="utf-8")
        html_part = msg.get_payload()[1]
        for a in inline:
            _attach(html_part, a, related=True)
    for a in attachments:
        if not any(a is b for b in inline):
            _attach(msg, a, related=False)

    data = msg.as_bytes(policy=email_policy.SMTP)
    if len(data) > policy.max_message_bytes:
        raise invalid(
            "message",
            f"the composed message is {len(data)} bytes, over the account's limit of {policy.max_message_bytes} bytes; send fewer or smaller attachments",
        )
    recipients = []
    for a in list(message.to) + list(message.cc) + list(message.bcc):
        if a.email.lower() not in (r.lower() for r in recipients):
            recipients.append(a.email)
    return data, sender.email, recipients, message_id
