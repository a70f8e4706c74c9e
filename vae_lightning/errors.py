"""The one exception type for mistakes a user can fix: its message is printed as a single line."""


class UserError(Exception):
    """A bad setting or file; the message names it and says what to do instead."""
