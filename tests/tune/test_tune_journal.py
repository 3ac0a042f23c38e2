"""A journal line cut by a killed writer: optuna's own reading fails on it; `repair` reports and skips it."""

from __future__ import annotations

import json

import optuna
import pytest

from expmatrix.tuning.journal import open_journal, repair


def _study(path):
    """The study as a fresh worker reads it (nothing written)."""
    return optuna.load_study(study_name="arm", storage=open_journal(path))


def test_a_cut_line_is_reported_skipped_and_what_came_after_it_kept(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "studies.journal"
    study = optuna.create_study(study_name="arm", storage=open_journal(path))
    for x in (1.0, 2.0):
        study.tell(study.ask(), x)
    whole = path.read_bytes()
    cut = whole.splitlines(keepends=True)[-1][:25]  # a writer killed mid-append: half a line, no end
    path.write_bytes(whole + cut)
    assert len(_study(path).trials) == 2  # optuna skips a cut line while it is the last one ...
    with pytest.raises(AttributeError):  # ... but the next append is glued onto it and lost to its writer
        _study(path).ask()
    with pytest.raises(json.JSONDecodeError):  # the append after that, and every later read, fail
        _study(path).ask()
    with pytest.raises(json.JSONDecodeError):
        _study(path)

    problems = repair(path)
    assert "studies.journal: line" in problems[0] and "damaged" in problems[0] and "skipped" in problems[0]
    assert "the journal as it was" in problems[-1]
    trials = _study(path).trials  # the operations glued behind the cut survive: the trials both `ask`s created
    assert [(t.value, t.state.name) for t in trials] == [(1.0, "COMPLETE"), (2.0, "COMPLETE")] + [(None, "RUNNING")] * 2
    assert repair(path) == []  # mended once
    assert len(list(tmp_path.glob("studies.journal.damaged-*"))) == 1  # the original, kept for a look


def test_a_cut_last_line_is_mended_before_the_next_append_glues_onto_it(tmp_path):
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    path = tmp_path / "studies.journal"
    study = optuna.create_study(study_name="arm", storage=open_journal(path))
    study.tell(study.ask(), 1.0)
    path.write_bytes(path.read_bytes() + b'{"op_code":4,"worker_id":"w","study_id"')
    assert repair(path)
    late = _study(path)
    late.tell(late.ask(), 2.0)
    assert [t.value for t in _study(path).trials] == [1.0, 2.0]
