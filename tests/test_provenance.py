"""The code hash a finished run records: every source file of the package counts (the C kernels too),
nothing a build, an interpreter or an editor leaves beside them does."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import expmatrix
from expmatrix.provenance import code_version, is_stale, source_files, source_hash

PACKAGE = Path(expmatrix.__file__).parent


@pytest.fixture
def tree(tmp_path) -> Path:
    """A copy of the package's source tree (without the caches the installed one may have)."""
    copy = tmp_path / "expmatrix"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.so"))
    return copy


def test_a_copy_of_the_tree_hashes_like_the_package_and_code_version_is_that_hash(tree):
    assert source_hash(tree) == source_hash(PACKAGE) == code_version()["code"]
    assert len(code_version()["code"]) == 12 and code_version()["version"] == expmatrix.__version__
    assert code_version() is code_version()  # computed once per process


def test_the_c_kernels_are_covered_and_a_change_to_them_changes_the_hash(tree):
    before = source_hash(tree)
    assert tree / "tokenizers" / "native.c" in set(source_files(tree))
    native = tree / "tokenizers" / "native.c"
    native.write_text(native.read_text() + "\n/* a changed kernel */\n")
    assert source_hash(tree) != before


@pytest.mark.parametrize(
    "change",
    [
        lambda t: (t / "metrics.py").write_text((t / "metrics.py").read_text() + "\n# changed\n"),
        lambda t: (t / "tokenizers" / "presets.yaml").write_text("bins: 5\n"),  # a data file shipped in the package
        lambda t: (t / "metrics.py").rename(t / "metrics2.py"),  # same bytes, another module
    ],
    ids=["python-module", "new-data-file", "renamed-module"],
)
def test_a_changed_added_or_moved_source_file_changes_the_hash(tree, change):
    before = source_hash(tree)
    change(tree)
    assert source_hash(tree) != before


@pytest.mark.parametrize(
    "junk",
    [
        "__pycache__/x.cpython-311.pyc",
        "tokenizers/__pycache__/native.cpython-311.pyc",
        "stray.pyc",
        "tokenizers/native.cpython-311-x86_64-linux-gnu.so",
        "tokenizers/.native.c.swp",  # vim
        "metrics.py~",  # emacs backup
        "#metrics.py#",  # emacs autosave
        ".mypy_cache/3.11/cache.json",
        "tokenizers/.checkpoint.pt.123.tmp",
    ],
)
def test_caches_bytecode_builds_and_editor_files_leave_the_hash_unchanged(tree, junk):
    before = source_hash(tree)
    (tree / junk).parent.mkdir(parents=True, exist_ok=True)
    (tree / junk).write_bytes(b"\x00generated")
    assert source_hash(tree) == before


def test_a_done_job_is_stale_when_its_recorded_code_differs_from_the_running_code():
    assert not is_stale({"state": "done", "code_version": code_version()})
    assert is_stale({"state": "done", "code_version": {**code_version(), "code": "000000000000"}})
    assert is_stale({"state": "done"})  # finished before versions were recorded
    assert not is_stale({"state": "failed", "code_version": {"code": "000000000000"}})  # only finished jobs
