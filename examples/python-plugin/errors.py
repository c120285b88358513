"""The contract's one error type, raised the way componentize-py expects."""

from componentize_py_types import Err
from wit_world.imports import types


def invalid(field: str, reason: str) -> Err:
    """An `invalid-input` error naming `field`: never worth retrying, fix the field."""
    return Err(types.MailError_InvalidInput(types.FieldError(field=field, reason=reason)))


def auth_failed(why: str) -> Err:
    return Err(types.MailError_AuthFailed(why))
