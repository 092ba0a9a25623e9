"""The one exception a user can cause: the CLI prints its message on one line and exits 2."""


class UserError(Exception):
    """Bad input (data, config, checkpoint, name). The message is the whole story for the user."""
