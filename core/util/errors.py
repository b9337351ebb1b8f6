"""Typed errors. Every error a user can act on is a sentence: what, where, what to do."""

from __future__ import annotations


class LabelloopError(Exception):
    """Base class for errors shown to a user as one sentence (CLI exit code 2)."""


class ConfigError(LabelloopError):
    """labelloop.toml is missing, malformed, or holds a wrong key or value."""


class ProjectError(LabelloopError):
    """The project folder is missing, not a project, or already exists."""


class InputFileError(LabelloopError):
    """An input file cannot be read at all (missing, unknown format, unreadable)."""


class ValidationError(LabelloopError):
    """Rows of an input file are invalid. ``problems`` lists every one found."""

    def __init__(self, path: str, problems: list["RowProblem"], total: int | None = None):
        self.path = path
        self.problems = problems
        self.total = total if total is not None else len(problems)
        first = problems[0]
        more = (
            f" ({self.total - 1} more problem(s); use --skip-invalid to import the valid rows)"
            if self.total > 1
            else ""
        )
        super().__init__(f"{path}: {first.describe()}; nothing was imported{more}.")


class RowProblem:
    """One invalid row: 1-based data row number (header excluded), column, reason."""

    __slots__ = ("row", "column", "reason")

    def __init__(self, row: int | None, column: str | None, reason: str):
        self.row = row
        self.column = column
        self.reason = reason

    def describe(self) -> str:
        where = []
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.column is not None:
            where.append(f"column '{self.column}'")
        return (", ".join(where) + ": " if where else "") + self.reason

    def __repr__(self) -> str:  # pragma: no cover - debugging aid
        return f"RowProblem({self.row!r}, {self.column!r}, {self.reason!r})"


class EmptyPoolError(LabelloopError):
    """No unlabelled pool items are left to select from."""


class ModelError(LabelloopError):
    """A model cannot be trained or used (e.g. one class only)."""


class StoreError(LabelloopError):
    """The project store could not be written or read (disk full, I/O error, a damaged file).
    Everything committed before the failure is kept; the workstation stops taking decisions."""
