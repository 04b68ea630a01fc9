"""Exceptions the pipelines share."""


class WriteError(OSError):
    """Writing the output failed; the command stops (as GNU tools do)."""
