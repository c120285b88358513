"""flowmail's mail plugin world, implemented in Python: `send-mail` composes with the
standard `email` package under this plugin's own template policy (see compose.py), and
`read-mailbox` has the host fetch the mailbox and parses what it returns (see read.py).

The plugin reaches nothing but the host's imports: no file, socket or secret.
"""

import functools
import traceback

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports import actions
from wit_world.imports import log, mailbox, tokens, transport, types

import preload  # noqa: F401  (imported for its effect)
import compose
import read
from errors import auth_failed, invalid


def _forwarded(message):
    """The attachments `message.forward_attachments` refers to, fetched from the host."""
    out = []
    for i, ref in enumerate(message.forward_attachments):
        field = f"message.forward_attachments[{i}]"
        try:
            raw = mailbox.fetch(ref.account, ref.message)
        except Err as e:
            if isinstance(e.value, types.MailError_NotFound):
                raise invalid(field, f"message {ref.message} of `{ref.account}` was not found: {e.value.value}")
            raise
        try:
            found = read.attachments_of(bytes(raw.data))
        except read.Unreadable as why:
            raise invalid(field, f"message {ref.message} cannot be read: it {why}")
        if ref.index is None:
            out.extend((f"{field}[{j}]", a) for j, a in enumerate(found))
        elif ref.index < len(found):
            out.append((field, found[ref.index]))
        else:
            raise invalid(f"{field}.index", f"message {ref.message} has {len(found)} attachments; index {ref.index} does not exist")
    return out


def _logged(export):
    """Writes the traceback of an exception that is not a contract error to the host's
    log before it ends the call (the host reports it as a fault of the plugin)."""

    @functools.wraps(export)
    def call(*args):
        try:
            return export(*args)
        except Err:
            raise
        except BaseException:
            log.log(log.Level.ERROR, traceback.format_exc())
            raise

    return call


class Actions(exports.Actions):
    @_logged
    def send_mail(self, account, message):
        policy = transport.policy(account)
        with tokens.credential_for(account) as credential:
            state = credential.state()
        if isinstance(state, tokens.CredentialState_NeedsAuthorization):
            raise auth_failed(f"account `{account}` needs authorization: {state.value}")
        sender = compose.sender_of(message, policy)
        compose.validate(message, sender, policy)
        forwarded = []
        for field, a in _forwarded(message):
            # Forwarded files come from received mail: one over the limit is left out
            # with a warning, so one bad message does not fail a digest of many.
            try:
                compose.check_attachment(field, a, policy)
                forwarded.append((field, a))
            except Err as e:
                log.log(log.Level.WARN, f"left out the forwarded attachment `{a.name}` ({field}): {e.value.value.reason}")
        data, mail_from, recipients, message_id = compose.compose(account, message, sender, policy, forwarded)
        delivery = transport.send(account, transport.Envelope(sender=mail_from, recipients=recipients), data)
        return actions.Receipt(
            message_id=message_id, accepted=delivery.accepted, transport=delivery.transport,
            status=delivery.status, reference=delivery.reference, size=len(data),
        )

    @_logged
    def read_mailbox(self, account, filter, after, limit, cap):
        if limit == 0 or limit > read.MAX_BATCH:
            raise invalid("limit", f"must be between 1 and {read.MAX_BATCH}, not {limit}")
        if cap is not None and cap.max_size == 0:
            raise invalid("cap.max_size", "must be more than 0 bytes")
        since = read.parse_since(filter.since)
        search = mailbox.Search(
            sender_contains=filter.sender_contains,
            subject_contains=filter.subject_contains,
            unseen=bool(filter.unseen),
            sent_since=since.strftime("%Y-%m-%d") if since is not None else None,
        )
        batch = mailbox.fetch_after(account, after, limit, search, cap)
        page = actions.MailboxPage(
            messages=[], skipped=[], next_cursor=batch.next, scanned=0,
            more=batch.more, restarted=batch.restarted,
        )
        for raw in batch.messages:
            page.scanned += 1
            try:
                if raw.content == mailbox.Content.OMITTED:
                    limit_text = cap.max_size if cap is not None else 0
                    raise read.Unreadable(f"is {raw.size} bytes, over the size cap of {limit_text} bytes, and the cap says to skip it")
                m = read.received(raw)
            except (read.Unreadable, ValueError, LookupError, TypeError, UnicodeError, RecursionError) as why:
                reason = str(why) if isinstance(why, read.Unreadable) else f"cannot be parsed ({type(why).__name__}: {why})"
                log.log(log.Level.WARN, f"message {raw.id} of `{account}` is skipped: it {reason}")
                page.skipped.append(actions.SkippedMessage(id=raw.id, reason=reason))
                continue
            if read.matches(m, filter, since):
                page.messages.append(m)
        return page
