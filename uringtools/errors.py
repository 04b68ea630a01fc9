"""Exceptions the pipelines share."""


class WriteError(OSError):
    """Writing the output failed; the command stops (as GNU tools do)."""

    @classmethod
    def of(cls, exc: OSError) -> "WriteError":
        """The write error for a failed request or call."""
        return cls(exc.errno, exc.strerror)
