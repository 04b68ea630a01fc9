"""The Python half of the installed commands.

``uring-cat`` and the others are small C launchers (csrc/launcher.c) that
run ``_uringtools COMMAND ARGS...``. They note in ``URINGTOOLS_LAUNCH``
what Python hides from us: a directory on fd 0-2 (Python cannot start with
one there, so the launcher parks it above fd 2 behind /dev/null), a
SIGPIPE the caller ignored or blocked (Python ignores it anyway), and a
SIGINT it held while Python started.
"""

from __future__ import annotations

import os
import stat
import sys

from . import common

NOTE = "URINGTOOLS_LAUNCH"

#: launcher name -> (module, function)
COMMANDS = {
    "uring-cat": ("uringtools.cli.cat", "main"),
    "uring-cp": ("uringtools.cli.cp", "main"),
    "uring-hash": ("uringtools.cli.hash", "main"),
    "uringtools": ("uringtools.cli", "main"),
}


def take_note(note: str) -> None:
    """Act on the launcher's note: put parked directories back on their
    std fds; remember an ignored SIGPIPE."""
    for word in note.split():
        key, _, value = word.partition("=")
        if key == "sigpipe" and value == "ignored":
            common.SIGPIPE_IGNORED = True
        elif key == "sigint" and value == "held":
            # held while Python started; one pending now raises
            # KeyboardInterrupt here, which main() turns into a quiet death
            sigint = {common.signal.SIGINT}
            common.signal.pthread_sigmask(common.signal.SIG_UNBLOCK, sigint)
        elif key in ("0", "1", "2") and value.isascii() and value.isdigit():
            parked = int(value)
            try:
                if not stat.S_ISDIR(os.fstat(parked).st_mode):
                    continue     # not what the launcher left: leave it
                os.dup2(parked, int(key))
                os.close(parked)
            except (OSError, OverflowError):    # not an fd at all
                continue


def main() -> None:
    """Run the command the launcher names in ``sys.argv[1]``."""
    try:
        take_note(os.environ.pop(NOTE, ""))
        command = sys.argv.pop(1) if len(sys.argv) > 1 else ""
        if command not in COMMANDS:
            sys.stderr.write(f"_uringtools: unknown command {command!r}; "
                             f"run one of {', '.join(COMMANDS)}\n")
            raise SystemExit(2)
        module, function = COMMANDS[command]
        getattr(__import__(module, fromlist=[function]), function)()
    except KeyboardInterrupt:
        # Ctrl-C while importing or parsing, before a command's run_main
        # (which cleans up and dies of it): nothing to undo, no traceback
        common.die_of_signal(common.signal.SIGINT)
