"""The commands: each parses its arguments and calls the stage that does the work."""
