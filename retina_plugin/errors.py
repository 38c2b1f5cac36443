"""
The one base class of the errors a user can fix: a config key, a file, a dataset, a flag.
Its message is the one line the user sees; every tool prints it as `<tool>: error: <message>`
and exits with status 2 (`retina_plugin.cli.arguments.one_line_errors`). Anything else that
escapes is a bug, and keeps its traceback.
"""

__all__ = ["UserError", "InputFileError"]


class UserError(ValueError):
    """Bad input the user can fix; str(error) names the file, key or value, on one line."""


class InputFileError(UserError):
    """A file or path the user gave cannot be read or used (an image, a results or thresholds file, metrics); the message names it."""
