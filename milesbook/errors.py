"""Errors a user can cause and fix. The CLI prints their message on one line, without a traceback."""


class UserError(Exception):
    """Bad input (a name, a range, a missing dataset): the message says what to do instead."""


class NonFiniteLossError(UserError):
    """Training produced a NaN or infinite loss; the last good checkpoint is kept."""


def check_choice(kind: str, value: str, choices) -> str:
    """Return `value` if it is one of `choices`, else raise a UserError naming the valid ones."""
    choices = list(choices)
    if value not in choices:
        raise UserError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value
