"""The one exception type users see.

Every problem caused by input (a file, an option, a checkpoint) is raised as a
:class:`TextweaverError` whose message names the input and says how to fix it. The CLI prints
the message on one line and exits with status 2; the Python API lets it propagate.
"""


class TextweaverError(Exception):
    """A user-facing error: the message names the problem and the fix."""
