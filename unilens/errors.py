"""One exception type for every user-facing mistake, so the CLI can print one line and exit 2."""


class UnilensError(Exception):
    """A problem with the user's input: the message names the problem and the fix."""
