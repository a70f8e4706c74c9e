"""The one exception type for mistakes a user can fix: its message is printed as a single line."""

import os
import sys
from typing import NoReturn


class UserError(Exception):
    """A bad setting or file; the message names it and says what to do instead."""


def exit_with(error: UserError) -> NoReturn:
    """What an entry point does with a UserError: print its one line and exit 2.

    With HYDRA_FULL_ERROR=1 the error is re-raised instead, for the full traceback.
    """
    if os.environ.get("HYDRA_FULL_ERROR") == "1":
        raise error
    print(f"error: {error}", file=sys.stderr)
    sys.exit(2)
