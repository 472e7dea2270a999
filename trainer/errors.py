"""Error types shared by the trainer's modules and its CLI.

`BadInput` is the user's fault (a missing file, a malformed line, an invalid config key):
the CLI prints its message and exits with status 2. Anything else is an internal failure
(status 1).
"""


class BadInput(Exception):
    """Invalid input from the user; the message names the file, line or key."""
