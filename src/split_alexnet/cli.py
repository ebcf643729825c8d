"""What every command shares: a bad input or a stopped run is one line, not a traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable


class UserError(Exception):
    """A failure the user acts on (a diverged run, a pair that disagrees): one line, exit 2.

    The launchers say a deterministic error once, before torchrun starts
    (launch/common.sh preflight); a failure that another try may not meet
    sets its own `status`.
    """

    status = 2


def run_command(command: Callable[[], object]) -> None:
    """Run a user command; a ValueError (DataError, CheckpointError, LayoutError, bad
    options) or a UserError ends it with its one-line message and exit status 2 (or
    the error's own `status`)."""
    try:
        command()
    except (ValueError, UserError) as error:
        if logging.getLogger().handlers:
            logging.getLogger("split_alexnet").error("%s", error)
        else:
            print(f"error: {error}", file=sys.stderr)
        sys.exit(getattr(error, "status", 2))
