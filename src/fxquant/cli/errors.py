"""The command line's exit codes and the errors that map to them."""

from __future__ import annotations

import enum

__all__ = ["BadInputError", "BudgetNotMetError", "CliError", "ExitCode"]


class ExitCode(enum.IntEnum):
    """What ``fxquant`` returns to the shell (documented in ``fxquant --help``)."""

    OK = 0
    INTERNAL_ERROR = 1
    USAGE = 2
    BAD_INPUT = 3
    BUDGET_NOT_MET = 4


class CliError(Exception):
    """An error the command line reports as one message (no traceback) and an exit code."""

    exit_code: ExitCode = ExitCode.INTERNAL_ERROR


class BadInputError(CliError):
    """A model, data or report file that cannot be used: the message says which and what to do."""

    exit_code = ExitCode.BAD_INPUT


class BudgetNotMetError(CliError):
    """The quantized model misses the ``--accuracy-budget`` (its outputs were still written)."""

    exit_code = ExitCode.BUDGET_NOT_MET
