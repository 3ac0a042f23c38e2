"""The tokenizer-fit cache: a job's tokenizer fitted once per `fit_key`, on the training split only.

A fit that fails is recorded beside the cache entry: the other jobs that need it fail at once with its
error instead of each repeating it, until `--retry-failed` clears the record. A worker fits under the key's
claim (`FitPaths.claim`, with a heartbeat): workers that need the same new fit at once (tuning trials that
change a codebook size) wait for its artifact, and a fit whose worker died is taken over.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from expmatrix.assembly.recipe import Recipe, features_of
from expmatrix.claims import FileClaim, make_once
from expmatrix.config import JobConfig
from expmatrix.data import Events, data_selection
from expmatrix.paths import FitPaths
from expmatrix.runfiles import DamagedFile, read_file, set_aside, write_json
from expmatrix.tokenizers import Tokenizer, TokenizerError, build_tokenizer


class FitFailed(TokenizerError):
    """A shared fit failed before: its record says why."""


def tokenizer_for(cfg: JobConfig) -> Tokenizer:
    """A job's tokenizer, unfitted (where no `Recipe` is at hand: sizing a model, the every-key check)."""
    return build_tokenizer(cfg.tokenizer, *features_of(cfg))


def _check_record(record: dict, tokenizer: Tokenizer, recipe: Recipe, files: FitPaths) -> None:
    """An artifact fitted on another preset, feature set or data selection is refused, naming both."""
    for what, mine in (("signature", tokenizer.signature()), ("data", data_selection(recipe.cfg.data))):
        if record.get(what) != mine:
            raise TokenizerError(
                f"{files.artifact}: fitted for {what} {record.get(what)!r}, but this job needs {mine!r}: it is not "
                "this job's artifact (delete it to fit again)"
            )


def _cached(tokenizer: Tokenizer, recipe: Recipe, files: FitPaths) -> bool:
    """Load the cached fit into `tokenizer` (False: none yet); a recorded failure raises `FitFailed`."""
    try:
        record = read_file(files.artifact)
        _check_record(record, tokenizer, recipe, files)
        tokenizer.load_state_dict(record["state"])
        return True
    except FileNotFoundError:
        pass
    except DamagedFile:
        set_aside(files.artifact)  # a cache: fit again (the damaged file stays for a look)
    if files.failure.exists():
        why = read_file(files.failure)
        raise FitFailed(
            f"the shared tokenizer fit {recipe.fit_key} failed ({why['error']}); run with --retry-failed to fit again"
        )
    return False


def _fit(tokenizer: Tokenizer, recipe: Recipe, files: FitPaths, train: Callable[[], Events]) -> None:
    try:
        tokenizer.fit(train())  # the training split only
    except Exception as e:
        error = {"error": f"{type(e).__name__}: {e}", "time": time.time(), "preset": recipe.cfg.tokenizer.name}
        write_json(files.failure, error)
        raise
    record = {"signature": tokenizer.signature(), "data": data_selection(recipe.cfg.data)}
    write_json(files.artifact, record | {"state": tokenizer.state_dict()})


def fitted_tokenizer(recipe: Recipe, files: FitPaths, train: Callable[[], Events]) -> Tokenizer:
    """The job's tokenizer, fitted: from the cache, or fitted on `train()` (the training split) and cached, by one
    worker at a time per key (the others wait for its artifact)."""
    tokenizer = build_tokenizer(recipe.cfg.tokenizer, recipe.features, recipe.use_met)
    run = recipe.job.run
    make_once(
        FileClaim(files.claim, run.stale_after_seconds),
        lambda: _cached(tokenizer, recipe, files),
        lambda: _fit(tokenizer, recipe, files, train),
        run.heartbeat_seconds,
    )
    return tokenizer
