"""The gridflex exception tree and validation issues.

One root exception, :class:`GridflexError`, split by what a caller does with it:

* :class:`InvalidInput` — reject (and count, and dead-letter on a stream); carries every
  :class:`Issue` found, never only the first.
* :class:`Infeasible` — fall back (the dispatcher's proportional allocation still honours
  every DSO limit).
* :class:`SolverFailed` — fall back, like :class:`Infeasible`, but the problem itself may be
  fine (time-out, numerical trouble, solver missing).
* :class:`TransientIO` — retry (raised by adapters; defined here so the core can name it).

Validation functions return ``list[Issue]``; the boundary decides to raise, reject or
dead-letter.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "ISSUE_INVALID",
    "ConfigError",
    "GridflexError",
    "Infeasible",
    "InvalidInput",
    "Issue",
    "SolverFailed",
    "TransientIO",
    "raise_if_issues",
]


ISSUE_INVALID = "invalid"
"""The code of an :class:`Issue` built without one (older positional use)."""


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found by a validation: where (``field``), about what (``ids``), and why.

    ``code`` is a stable snake_case name of the problem (``unknown_site``,
    ``evse_owned_by_other_csms``, ``strict_type`` …) and ``ids`` the domain ids it concerns
    (EVSE, CSMS, site, step …), so that callers and tests compare values, never substrings
    of ``message``. Write new issues with keywords, ``Issue(field=…, code=…, ids=(…),
    message=…)``; the older positional form ``Issue(field, message, ids)`` still works and
    gets the code :data:`ISSUE_INVALID`.
    """

    field: str
    message: str
    ids: tuple[str, ...] = ()
    code: str = ISSUE_INVALID

    def __str__(self) -> str:
        where = f"{self.field}[{', '.join(self.ids)}]" if self.ids else self.field
        return f"{where}: {self.message}"


class GridflexError(Exception):
    """Root of every exception gridflex raises on purpose."""


class InvalidInput(GridflexError):
    """Input that must be rejected; ``issues`` lists every problem found."""

    def __init__(self, issues: Sequence[Issue] | str) -> None:
        if isinstance(issues, str):
            issues = [Issue(field="input", message=issues)]
        self.issues: tuple[Issue, ...] = tuple(issues)
        super().__init__("; ".join(str(i) for i in self.issues) or "invalid input")


class ConfigError(InvalidInput):
    """A configuration or scenario file that cannot be used as it is."""


class Infeasible(GridflexError):
    """The constraints admit no solution; callers fall back to a safe allocation."""


class SolverFailed(GridflexError):
    """The solver did not return an optimal plan (time-out, numerical failure, missing)."""


class TransientIO(GridflexError):
    """A passing I/O failure (broker, server, network); callers retry."""


def raise_if_issues(issues: Sequence[Issue], exc: type[InvalidInput] = InvalidInput) -> None:
    """Raise ``exc`` with every issue when ``issues`` is not empty."""
    if issues:
        raise exc(issues)
