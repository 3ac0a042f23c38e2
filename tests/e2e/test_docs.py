"""The README and docs/ stay true: their commands name real CLI options, the cheap ones run, their links resolve."""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from expmatrix.cli import main

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "console"}
FENCE = re.compile(r"^```(\S*)\s*$")
# not runnable as written: <job-id>, [...], [--flag], slurm|condor, $VARS
PLACEHOLDER = re.compile(r"<[^>]*>|\.\.\.|[|\[\]$]")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*$")
# commands cheap enough (seconds, no training) to run exactly as documented; a predicate says which forms
RUNNABLE = {
    ("list",): lambda args: True,
    ("plan",): lambda args: True,
    ("status",): lambda args: "--watch" not in args,  # --watch refreshes until Ctrl-C
    ("data", "synth"): lambda args: True,
    ("submit",): lambda args: "--dry-run" in args,  # a real submit needs sbatch/condor_submit
}
SYNTH_EVENTS = 2000  # `data synth --events` is lowered to this: the full 100k take a while and prove nothing more


@dataclass(frozen=True)
class DocCommand:
    """One `expmatrix ...` line of a shell block: where it is, and its words after `expmatrix`."""

    page: str
    line: int
    text: str
    words: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def rel(page: Path) -> str:
    return page.relative_to(REPO).as_posix()


def fenced_blocks(page: Path) -> list[tuple[str, list[tuple[int, str]]]]:
    """(language, [(line number, text)]) of every fenced block of a Markdown page."""
    blocks, current, lang = [], None, ""
    for number, text in enumerate(page.read_text().splitlines(), start=1):
        fence = FENCE.match(text)
        if fence and current is None:
            current, lang = [], fence.group(1).lower()
        elif fence:
            blocks.append((lang, current))
            current = None
        elif current is not None:
            current.append((number, text))
    assert current is None, f"{rel(page)}: a code block is never closed"
    return blocks


def prose_lines(page: Path) -> list[str]:
    """The lines of a page outside its code blocks (where links and headings live)."""
    inside, out = False, []
    for text in page.read_text().splitlines():
        if FENCE.match(text):
            inside = not inside
        elif not inside:
            out.append(text)
    return out


def shell_commands(lines: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Lines of a shell block with `\\` continuations joined and a console `$ ` prompt removed."""
    out, pending, start = [], "", 0
    for number, text in lines:
        if not pending:
            start = number
        text = text.strip().removeprefix("$ ")
        if text.endswith("\\"):
            pending += text[:-1] + " "
            continue
        out.append((start, pending + text))
        pending = ""
    return out


def documented_commands(pages: list[Path] = PAGES) -> list[DocCommand]:
    """Every line starting with `expmatrix ` in a bash/sh/console block, trailing `# comment` removed."""
    found = []
    for page in pages:
        for lang, lines in fenced_blocks(page):
            if lang not in SHELL_LANGS:
                continue
            for number, text in shell_commands(lines):
                words = shlex.split(text, comments=True)
                if words[:1] == ["expmatrix"]:
                    found.append(DocCommand(rel(page), number, " ".join(words), tuple(words[1:])))
    return found


def resolve(words: tuple[str, ...]) -> tuple[click.Command, tuple[str, ...], click.Context]:
    """The click command a line names (e.g. `data synth`), its path and its context."""
    command, path = main, ()
    ctx = click.Context(main, info_name="expmatrix")
    while isinstance(command, click.Group) and len(path) < len(words) and not words[len(path)].startswith("-"):
        name = words[len(path)]
        sub = command.get_command(ctx, name)
        assert sub is not None, f"`expmatrix {' '.join(path)}` has no command {name!r}"
        command, path = sub, (*path, name)
        ctx = click.Context(sub, info_name=name, parent=ctx)
    assert not isinstance(command, click.Group), f"`expmatrix {' '.join(path)}` needs a subcommand"
    return command, path, ctx


def options_of(command: click.Command) -> dict[str, click.Option]:
    """Every spelling of every option of a command (`--plots` and `--no-plots` alike)."""
    spelled = {"--help": None}
    for param in command.params:
        if isinstance(param, click.Option):
            spelled.update(dict.fromkeys(param.opts + param.secondary_opts, param))
    return spelled


def check_options(words: tuple[str, ...]) -> None:
    """Fail unless every `--option` of the line is an option of its command, and every value of a
    choice option (each `a|b` alternative) is one of its choices."""
    command, path, _ = resolve(words)
    known = options_of(command)
    tokens = [w.strip("[]") for w in words[len(path) :]]
    for i, token in enumerate(tokens):
        if not token.startswith("--"):
            continue
        name = token.split("=", 1)[0]
        assert name in known, f"`expmatrix {' '.join(path)}` has no option {name}; it has {sorted(known)}"
        option = known[name]
        if option is None or option.is_flag or not isinstance(option.type, click.Choice):
            continue
        value = token.split("=", 1)[1] if "=" in token else (tokens[i + 1] if i + 1 < len(tokens) else "")
        for choice in value.split("|"):
            assert choice in option.type.choices, f"{name} {choice!r}: not one of {option.type.choices}"


def runnable(command: DocCommand) -> bool:
    """Cheap, free of placeholders, and writing nowhere but the working folder."""
    if PLACEHOLDER.search(command.text) or any(w.startswith("/") for w in command.words):
        return False
    try:
        _, path, _ = resolve(command.words)
    except AssertionError:  # an unknown command: reported by the option test, not at collection
        return False
    allowed = RUNNABLE.get(path)
    return allowed is not None and allowed(command.words)


COMMANDS = documented_commands()
RUNNABLE_COMMANDS = [c for c in COMMANDS if runnable(c)]


def lowered_events(words: tuple[str, ...]) -> list[str]:
    """The words with `data synth --events N` capped at SYNTH_EVENTS."""
    out = list(words)
    if tuple(out[:2]) == ("data", "synth") and "--events" in out:
        i = out.index("--events") + 1
        out[i] = str(min(int(out[i]), SYNTH_EVENTS))
    return out


@pytest.mark.parametrize("command", COMMANDS, ids=str)
def test_documented_commands_name_real_options(command: DocCommand) -> None:
    check_options(command.words)


@pytest.mark.slow
@pytest.mark.parametrize("command", RUNNABLE_COMMANDS, ids=str)
def test_cheap_documented_commands_run_as_written(command: DocCommand, tmp_path: Path, monkeypatch) -> None:
    # the repo folders a command names by relative path, copied so every write lands in tmp_path
    for folder in ("experiments", "tokenizers", "hpc", "reports"):
        shutil.copytree(REPO / folder, tmp_path / folder)
    monkeypatch.chdir(tmp_path)
    words = lowered_events(command.words)
    result = CliRunner(env={"EXPMATRIX_RUNS": str(tmp_path / "runs")}).invoke(main, words, catch_exceptions=False)
    assert result.exit_code == 0, f"{command}\n{result.output}"
    assert result.output.strip(), f"{command} printed nothing"
    if "--out" in words:
        assert (tmp_path / words[words.index("--out") + 1]).is_file()


def test_the_quick_start_commands_are_among_those_run() -> None:
    """The run test above covers what a newcomer types first; it must not silently shrink to nothing."""
    ran = {c.text for c in RUNNABLE_COMMANDS}
    flagship = "experiments/binning_vs_direct.yaml --profile quick"
    for verb in ("list", "plan", "status"):
        assert any(t.startswith(f"expmatrix {verb} ") and flagship in t for t in ran), verb
    assert any(t.startswith("expmatrix data synth fourtops --out ") for t in ran)
    assert any(c.text.startswith("expmatrix submit") for c in RUNNABLE_COMMANDS)


def test_a_misspelled_or_unknown_option_fails_the_check() -> None:
    """The checker itself: it must reject what the docs could get wrong."""
    check_options(("report", "x.yaml", "--no-plots", "--format", "latex"))
    for words in (
        ("report", "x.yaml", "--top-kk", "3"),
        ("data", "synth", "fourtops", "--outt", "f.h5"),
        ("submit", "x.yaml", "--backend", "slurm|pbs"),
        ("data", "bogus"),
    ):
        with pytest.raises(AssertionError):
            check_options(words)


def test_readme_sets_up_with_exactly_make_demo_and_make_test() -> None:
    text = README.read_text()
    section = text.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = [lines for lang, lines in fenced_blocks(README) if lang == "bash"]
    setup = next(lines for lines in blocks if "\n".join(t for _, t in lines) in section)
    commands = [" ".join(shlex.split(t, comments=True)) for _, t in setup]
    assert [c for c in commands if c] == ["make demo", "make test"]
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)


def test_readme_is_a_front_door_that_links_every_reference_page() -> None:
    assert len(README.read_text().splitlines()) <= 250
    readme_links = {target.split("#")[0] for target in LINK.findall("\n".join(prose_lines(README)))}
    for page in PAGES[1:]:
        assert rel(page) in readme_links, f"README does not link {rel(page)}"
        summary = page.read_text().split("\n\n", 2)[1]  # the paragraph under the title
        assert "\n" not in summary and "../README.md" in summary, f"{rel(page)}: no one-line summary linking back"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_relative_links_point_to_existing_files_and_headings(page: Path) -> None:
    for target in LINK.findall("\n".join(prose_lines(page))):
        if re.match(r"^[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{rel(page)}: link {target} -> {file} does not exist"
        if anchor and file.suffix == ".md":
            anchors = {slug(m.group(1)) for line in prose_lines(file) if (m := HEADING.match(line))}
            assert anchor in anchors, f"{rel(page)}: link {target}: no such heading in {file.name}"
