"""What every command module shares: the common options and the turning of known errors into one line."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any

import click

RUNS = click.option(
    "--runs",
    "runs_root",
    default=lambda: os.environ.get("EXPMATRIX_RUNS", "runs"),
    show_default="runs (or $EXPMATRIX_RUNS)",
    type=click.Path(file_okay=False),
    help="Root folder of run directories.",
)
PROFILE = click.option("--profile", default=None, help="A profile of the experiment, e.g. quick.")
SET = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a config key (repeatable).")

# (module, class) of the errors that are the user's to fix: printed as one line, exit status 1
KNOWN_ERRORS = (
    ("expmatrix.config", "SpecError"),
    ("expmatrix.data.fourtops", "DataError"),
    ("expmatrix.executors.backend", "SchedulerError"),
    ("expmatrix.models.sizing", "BudgetError"),
    ("expmatrix.tokenizers.errors", "TokenizerError"),
    ("expmatrix.runfiles", "DamagedFile"),
)
STOPPED = ("expmatrix.stop", "Stopped")  # a runner stopped by a signal: its jobs checkpointed; exit 75


def known(error: Exception, classes: tuple[tuple[str, str], ...] = KNOWN_ERRORS) -> bool:
    """One of `classes`. Only a module that is loaded can have raised its class, so none is imported
    here: `plan` and `status` stay free of torch and h5py."""
    return any(
        isinstance(error, getattr(sys.modules[module], name)) for module, name in classes if module in sys.modules
    )


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Known errors become one clear line and exit status 1, not a traceback; a stop by a signal says how
    to resume and exits PREEMPTED_EXIT (75)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            if known(e, (STOPPED,)):
                from expmatrix.states import PREEMPTED_EXIT

                click.echo(str(e))
                sys.exit(PREEMPTED_EXIT)
            if known(e):
                raise click.ClickException(str(e)) from None
            raise

    return wrapper
