class UserError(ValueError):
    """Bad input from the user: the entry point prints it as one line and exits with code 2."""
