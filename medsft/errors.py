class UserError(ValueError):
    """Bad input from the user: the entry point prints it as one line and exits with code 2."""


class OneLineErrors:
    """Mixed into an argparse parser (TrlParser, HfArgumentParser, ...): a parse error becomes a UserError instead
    of argparse's usage text and exit."""

    def error(self, message):
        raise UserError(message)


class ProcessLost(RuntimeError):
    """A collective operation got no answer from another process within ddp_timeout (or lost it): the entry point
    prints it as one line and exits with code 1."""
