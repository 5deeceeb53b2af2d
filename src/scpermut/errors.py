"""Errors a user can fix: each carries one sentence that names the file, column or gene."""


class ScpermutError(Exception):
    """Bad input or a failed precondition; the CLI prints the message and exits with status 1."""


class InputError(ScpermutError):
    """A file, column, sample or gene given by the user is missing or malformed."""
