"""The one error type a user can cause.

Anything raised as :class:`UserError` is the user's to fix (a wrong name, a missing file, a bad
value). Entry points print its message as a single line and exit with status 2, never a traceback.
"""


class UserError(Exception):
    """A problem with the user's input; the message says what is wrong and what to do."""

    exit_code = 2
