"""Exceptions shared by all stages."""


class UserError(Exception):
    """A problem the user can fix (bad input file, bad config, missing binary).

    The message must say what was wrong and how to fix it; the CLI prints it without a traceback.
    """


class InputFileError(UserError):
    """A raw input file is unreadable or malformed (missing column, wrong delimiter, empty)."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
