"""Errors that netfix reports to the operator (exit code 1, no traceback)."""

from __future__ import annotations


class NetfixError(Exception):
    """An error the CLI prints as one clear message and exits 1 on."""


class InputError(NetfixError):
    """Bad operator input: names the file, line and field path when known."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 path: str | None = None):
        self.message = message
        self.file = file
        self.line = line
        self.path = path
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line else "") + ": "
        field = f"{self.path}: " if self.path else ""
        return f"{where}{field}{self.message}"
