"""Render the submit templates in `hpc/` safely and reproducibly.

A template sees plain values and must pass each one through a filter that fits where it lands:
`q` (a shell word), `qpath` (a path, ~/ kept meaningful), `qjoin` (a shell command line),
`directive` (one `#SBATCH` / submit-file token: no whitespace, quotes or newlines),
`classad` (a ClassAd string literal), `condor` (a submit-file value: one line, no `$(`). An undefined variable is an
error (StrictUndefined), so a typo in a lab's template fails at `--dry-run`, not on the cluster.
Same context -> same bytes: nothing here reads the clock or the environment.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jinja2

from expmatrix.config import SpecError
from expmatrix.config.hpc import DIRECTIVE

SAFE_TOKEN = re.compile(DIRECTIVE)  # (settings are checked against it when they are read: an error at their key)


def q(value: Any) -> str:
    """One shell word, quoted when it needs to be."""
    return shlex.quote(str(value))


def qpath(value: Any) -> str:
    """A path as one shell word; a leading ~/ still means the home folder of whoever runs the job."""
    text = str(value)
    return '"$HOME"/' + q(text[2:]) if text.startswith("~/") else q(text)


def qjoin(words: list[Any]) -> str:
    return " ".join(q(w) for w in words)


def directive(value: Any) -> str:
    """A value for a scheduler directive line, which no shell reads: reject rather than quote."""
    text = str(value)
    if not SAFE_TOKEN.match(text):
        raise SpecError(f"{text!r} cannot go into a scheduler directive: use letters, digits and _@%:,./+=- only")
    return text


def classad(value: Any) -> str:
    """A ClassAd literal: strings quoted and escaped, numbers and booleans as they are."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    text = str(value)
    if "\n" in text:
        raise SpecError(f"{text!r}: a ClassAd string cannot hold a newline")
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def condor_value(value: Any) -> str:
    """A submit-file value (paths, names): one line, no macro expansion from `$(`."""
    text = str(value)
    if "\n" in text or "$(" in text:
        raise SpecError(f"{text!r} cannot go into an HTCondor submit file (newline or $( )")
    return text


def environment(templates: Path) -> jinja2.Environment:
    if not templates.is_dir():
        raise SpecError(f"templates folder {templates} not found (set hpc.templates in the experiment)")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(q=q, qpath=qpath, qjoin=qjoin, directive=directive, classad=classad, condor=condor_value)
    return env


def render(templates: Path, name: str, context: dict[str, Any]) -> str:
    """Render `templates/name`; a missing template or variable names the template."""
    try:
        return environment(templates).get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise SpecError(f"template {templates / name} not found") from None
    except jinja2.UndefinedError as e:
        raise SpecError(f"{templates / name}: {e.message}") from None
    except jinja2.TemplateSyntaxError as e:
        raise SpecError(f"{templates / name}:{e.lineno}: {e.message}") from None
