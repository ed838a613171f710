class UserError(ValueError):
    """Bad input from the user: the entry point prints it as one line and exits with code 2."""


class OneLineErrors:
    """Mixed into an argparse parser (TrlParser, HfArgumentParser, ...): a parse error becomes a UserError instead
    of argparse's usage text and exit."""

    def error(self, message):
        raise UserError(message)
