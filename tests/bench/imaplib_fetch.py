#!/usr/bin/env python3
"""The reference for the IMAP fetch benchmark: Python's imaplib and email packages read
the same dovecot mailbox as flowmail does, in batches of UIDs, parsing every message and
applying the same filter (no attachments). Prints one JSON line with the count and time."""

import argparse
import email
import email.policy
import imaplib
import json
import ssl
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--cafile", required=True)
    p.add_argument("--batch", type=int, default=200)
    a = p.parse_args()

    start = time.perf_counter()
    imap = imaplib.IMAP4("localhost", a.port)
    imap.starttls(ssl.create_default_context(cafile=a.cafile))
    imap.login(a.user, a.password)
    imap.select("INBOX", readonly=True)
    _, data = imap.uid("SEARCH", None, "ALL")
    uids = [int(u) for u in data[0].split()]
    matched = 0
    for i in range(0, len(uids), a.batch):
        chunk = ",".join(str(u) for u in uids[i : i + a.batch])
        _, parts = imap.uid("FETCH", chunk, "(UID FLAGS RFC822.SIZE BODY.PEEK[])")
        for part in parts:
            if not isinstance(part, tuple):
                continue
            msg = email.message_from_bytes(part[1], policy=email.policy.default)
            body = msg.get_body(preferencelist=("plain", "html"))
            _ = body.get_content() if body is not None else None
            _ = (msg["subject"], msg["from"], msg["date"], msg["message-id"])
            if not any(True for _ in msg.iter_attachments()):
                matched += 1
    imap.logout()
    elapsed = time.perf_counter() - start
    print(json.dumps({"messages": len(uids), "matched": matched, "seconds": elapsed}))


if __name__ == "__main__":
    main()
