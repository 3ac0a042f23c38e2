"""Imports run one way: the config at the bottom, the CLI at the top (docs/architecture.md), and no circles.

`check_tree` reads every .py file under src/expmatrix with `ast` (no import is executed) and
reports each import that crosses a forbidden arrow of `RULES`, with its file and line. It sees
module-level and function-level imports, `import x` and `from x import y`, relative imports
(resolved against the file's package) and `importlib.import_module("literal")`. A registry
lookup by a computed name (tokenizers/__init__.py) is invisible to it: the runtime test below
covers what the config really loads. `cycles` finds every circle of imports between modules from the
same import lists (a function-level import hides a circle from Python, not from it).
"""

from __future__ import annotations

import ast
import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "expmatrix"

Match = Callable[[str], bool]


def under(*names: str) -> Match:
    """A module named `name` or inside it (`expmatrix.data` matches `expmatrix.data.fourtops`)."""
    return lambda module: any(module == n or module.startswith(n + ".") for n in names)


def is_cli(module: str) -> bool:
    """The top floor: `expmatrix.cli`, any `expmatrix.cli_*` module, and `python -m expmatrix`."""
    return under("expmatrix.cli", "expmatrix.__main__")(module) or module.startswith("expmatrix.cli_")


def package(name: str) -> Match:
    return under(f"expmatrix.{name}")


def outside_config(module: str) -> bool:
    return under("expmatrix")(module) and not package("config")(module)


@dataclass(frozen=True)
class Rule:
    source: Match  # the importing module
    target: Match  # the imported module it may not name
    arrow: str  # how the message names the forbidden arrow
    why: str


HEAVY = under("torch", "h5py", "rotary_embedding_torch", "vector_quantize_pytorch")

RULES = (
    Rule(package("report"), package("training"), "report -> training", "report reads run directories, not the trainer"),
    Rule(package("config"), outside_config, "config -> expmatrix (not config)", "config is the bottom floor"),
    Rule(package("config"), HEAVY, "config -> torch/h5py", "the config loads without torch or h5py"),
    *(
        Rule(package(src), package("executors"), f"{src} -> executors", "no scheduler knowledge below the executors")
        for src in ("models", "tokenizers", "training")
    ),
    *(
        Rule(package("tokenizers"), package(dst), f"tokenizers -> {dst}", "tokenizers sit below them")
        for dst in ("training", "report", "tools")  # (executors: the rule above)
    ),
    *(
        Rule(package("data"), package(dst), f"data -> {dst}", "data sources sit just above the config")
        for dst in ("tokenizers", "tools", "training", "models", "report", "executors")
    ),
    Rule(package("tokenizers"), package("models"), "tokenizers -> models", "shared blocks live in layers/"),
    *(
        Rule(package("layers"), package(dst), f"layers -> {dst}", "layers know nothing of tokenizers or jobs")
        for dst in ("tokenizers", "models", "data", "assembly", "training", "pretraining", "store")
    ),
    *(
        Rule(package(src), package(dst), f"{src} -> {dst}", "a job is assembled below the stages that use it")
        for src in ("assembly",)
        for dst in ("training", "pretraining", "shared_stages", "executors", "tuning", "report", "inert")
    ),
    Rule(package("pretraining"), package("training"), "pretraining -> training", "the training job sits above it"),
    Rule(package("paths"), lambda m: under("expmatrix")(m) and not package("config")(m), "paths -> expmatrix",
         "the paths object names files and does no I/O: it needs the config only"),  # fmt: skip
    Rule(lambda m: not is_cli(m), is_cli, "library -> cli", "the CLI is the top floor: nothing imports it"),
    Rule(lambda m: not package("data.pythia")(m), under("pythia8mc", "fastjet", "awkward"), "expmatrix -> physics",
         "the physics extra is optional: only data/pythia imports Pythia or FastJet"),  # fmt: skip
)


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    module: str
    target: str
    rule: Rule

    def __str__(self) -> str:
        return (
            f"{self.file}:{self.line}: {self.module} imports {self.target}: "
            f"forbidden arrow {self.rule.arrow} ({self.rule.why})"
        )


def module_name(path: Path, root: Path) -> str:
    """src/expmatrix/data/fourtops.py -> expmatrix.data.fourtops; a package's __init__ -> the package."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".")
    base = base if is_package else base[:-1]
    if level > 1:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def imported(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module) of every import in the tree, at any depth. `from x import y` yields `x.y`:
    y may be a submodule, and an attribute of x still matches every rule that x matches."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                yield node.lineno, base if alias.name == "*" else f"{base}.{alias.name}"
        elif isinstance(node, ast.Call) and _dynamic_import(node):
            yield node.lineno, node.args[0].value


def _dynamic_import(node: ast.Call) -> bool:
    """importlib.import_module("a.b") or __import__("a.b") with a literal name."""
    f = node.func
    named = (isinstance(f, ast.Attribute) and f.attr == "import_module") or (
        isinstance(f, ast.Name) and f.id in ("import_module", "__import__")
    )
    return named and bool(node.args) and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)


def check_source(text: str, module: str, file: str = "<source>", is_package: bool = False) -> list[Violation]:
    """The forbidden imports of one module's source text."""
    out = []
    for line, target in imported(ast.parse(text, filename=file), module, is_package):
        for rule in RULES:
            if rule.source(module) and rule.target(target):
                out.append(Violation(file, line, module, target, rule))
    return out


def sources(root: Path) -> Iterator[tuple[Path, str]]:
    """(file, module name) of every .py file under `root` (the package folder)."""
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" not in path.parts:
            yield path, module_name(path, root)


def check_tree(root: Path = PACKAGE) -> list[Violation]:
    """The forbidden imports of every .py file under `root` (the package folder)."""
    out = []
    for path, module in sources(root):
        shown = str(path.relative_to(root.parent.parent))  # src/expmatrix/...
        out += check_source(path.read_text(), module, shown, path.name == "__init__.py")
    return out


def import_graph(root: Path = PACKAGE) -> dict[str, set[str]]:
    """module -> the modules of the package it imports (at any depth of its code). `from a import b` is an
    import of the module `a.b` when there is one, else of `a`; a module importing its own package's
    `__init__` (as every submodule does implicitly) is not an edge."""
    files = dict((module, path) for path, module in sources(root))
    graph: dict[str, set[str]] = {m: set() for m in files}
    for module, path in files.items():
        for _, target in imported(ast.parse(path.read_text()), module, path.name == "__init__.py"):
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != module and not module.startswith(target + "."):
                graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every circle of imports, as the strongly connected components of more than one module (Tarjan), each
    listed from its smallest module along a shortest path back to it."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(_circle(graph, set(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def _circle(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest path from the component's smallest module back to itself (breadth first)."""
    start = min(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        v = queue.pop(0)
        for w in sorted(graph[v] & component):
            if w == start:
                return paths[v] + [start]
            if w not in paths:
                paths[w] = paths[v] + [w]
                queue.append(w)
    return sorted(component)


# ---------------------------------------------------------------- the tree as it is


def test_no_module_of_the_package_crosses_a_forbidden_arrow():
    violations = check_tree()
    if violations:
        pytest.fail("forbidden imports:\n" + "\n".join(map(str, violations)), pytrace=False)


def test_no_module_imports_itself_round_a_circle():
    found = cycles(import_graph())
    if found:
        pytest.fail("import cycles:\n" + "\n".join(" -> ".join(c) for c in found), pytrace=False)


def test_a_circle_in_a_copy_of_the_tree_is_found_with_its_path(tmp_path):
    """A function-level import that closes a circle (what once hid executors.worker <-> executors.packed)."""
    copy = tmp_path / "src" / "expmatrix"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    tasks = copy / "executors" / "tasks.py"
    tasks.write_text(tasks.read_text() + "\n\ndef _late():\n    from expmatrix.executors.worker import run_task\n")
    packed, tasks, worker = (f"expmatrix.executors.{m}" for m in ("packed", "tasks", "worker"))
    assert cycles(import_graph(copy)) == [[packed, tasks, worker, packed]]  # (worker imports packed)


def test_the_checker_sees_every_module_of_the_package():
    modules = {module_name(p, PACKAGE) for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts}
    assert {"expmatrix", "expmatrix.cli", "expmatrix.config.job", "expmatrix.report.formats.html"} <= modules
    assert len(modules) > 50  # every file, not just the top level


def test_importing_the_config_and_building_the_flagship_matrix_loads_neither_torch_nor_h5py():
    code = (
        "import json, sys\n"
        "import expmatrix.config\n"
        "from expmatrix.matrix import build_matrix\n"
        "jobs = build_matrix('experiments/binning_vs_direct.yaml', 'quick').jobs\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'h5py'))\n"
        "print(json.dumps({'jobs': len(jobs), 'heavy': heavy}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.splitlines()[-1])
    assert result["jobs"] > 0 and result["heavy"] == [], result


# ---------------------------------------------------------------- the checker can fail

# one forbidden import per rule: (importing module, source text, the arrow the message must name)
FORBIDDEN = [
    ("expmatrix.report.collect", "from expmatrix.training.job import run_job\n", "report -> training"),
    ("expmatrix.config.data", "import torch\n", "config -> torch/h5py"),
    ("expmatrix.config.data", "def f():\n    import h5py\n", "config -> torch/h5py"),
    ("expmatrix.config.job", "from expmatrix.data.events import Events\n", "config -> expmatrix (not config)"),
    ("expmatrix.config.job", "from expmatrix.store import RunStore\n", "config -> expmatrix (not config)"),
    ("expmatrix.config.job", "from .. import tokenizers\n", "config -> expmatrix (not config)"),
    ("expmatrix.models.transformer", "from expmatrix.executors import slurm\n", "models -> executors"),
    ("expmatrix.training.trainer", "import expmatrix.executors.worker\n", "training -> executors"),
    ("expmatrix.tokenizers.binned", "from ..executors.local import run_local\n", "tokenizers -> executors"),
    ("expmatrix.tokenizers.direct", "from expmatrix.training.losses import make_loss\n", "tokenizers -> training"),
    ("expmatrix.tokenizers.direct", "from expmatrix.report import plots\n", "tokenizers -> report"),
    ("expmatrix.tokenizers.binned", "from expmatrix.tools.binfile import bin_file\n", "tokenizers -> tools"),
    ("expmatrix.store", "from expmatrix.cli import main\n", "library -> cli"),
    ("expmatrix.report.build", "from expmatrix import cli\n", "library -> cli"),
    ("expmatrix.training.job", "import importlib\nimportlib.import_module('expmatrix.cli_extra')\n", "library -> cli"),
    *(
        ("expmatrix.data.fourtops", f"from expmatrix.{dst} import x\n", f"data -> {dst}")
        for dst in ("tokenizers", "tools", "training", "models", "report", "executors")
    ),
    ("expmatrix.tokenizers.vqvae.model", "from expmatrix.models.transformer import Transformer\n",
     "tokenizers -> models"),  # fmt: skip
    ("expmatrix.layers.blocks", "from expmatrix.tokenizers import Tokens\n", "layers -> tokenizers"),
    ("expmatrix.assembly.parts", "def f():\n    from expmatrix.pretraining.loop import run_pretraining\n",
     "assembly -> pretraining"),  # fmt: skip
    ("expmatrix.pretraining.loop", "from expmatrix.training.trainer import take\n", "pretraining -> training"),
    ("expmatrix.paths", "from expmatrix.runfiles import read_file\n", "paths -> expmatrix"),
]


@pytest.mark.parametrize(("module", "source", "arrow"), FORBIDDEN)
def test_a_forbidden_import_is_reported_with_file_line_and_arrow(module, source, arrow):
    violations = check_source(source, module, "src/x.py")
    assert [v.rule.arrow for v in violations] == [arrow], violations
    message = str(violations[0])
    assert message.startswith(f"src/x.py:{source.count(chr(10))}: {module} imports ") and f"arrow {arrow} " in message


@pytest.mark.parametrize(
    ("module", "source"),
    [
        ("expmatrix.config.job", "from expmatrix.config.strict import Strict\nfrom . import data\n"),
        ("expmatrix.tools.binfile", "from expmatrix.tokenizers import build_tokenizer\n"),  # tools is above
        ("expmatrix.tokenizers.base", "from expmatrix.data.events import Events\nimport torch\n"),
        ("expmatrix.training.job", "from expmatrix.models.sizing import build_model\n"),
        ("expmatrix.cli", "from expmatrix.executors.local import run_local\n"),
        ("expmatrix.cli_extra", "from expmatrix.cli import main\n"),
        ("expmatrix.__main__", "from expmatrix.cli import main\n"),
        ("expmatrix.data", "from .events import Events\n"),
    ],
)
def test_allowed_arrows_are_not_reported(module, source):
    assert check_source(source, module, is_package=module == "expmatrix.data") == []


def test_relative_imports_resolve_against_the_files_package():
    assert resolve("expmatrix.tokenizers.binned", False, 1, "base") == "expmatrix.tokenizers.base"
    assert resolve("expmatrix.tokenizers.binned", False, 2, "training") == "expmatrix.training"
    assert resolve("expmatrix.tokenizers", True, 1, "base") == "expmatrix.tokenizers.base"
    assert resolve("expmatrix.config.tokenizers", True, 2, None) == "expmatrix.config"
    assert resolve("expmatrix.config.tokenizers.binned", False, 3, "data") == "expmatrix.data"


def test_a_forbidden_import_in_a_copy_of_the_tree_fails_the_check(tmp_path):
    """The whole-tree check, not only the unit: a copy with one bad line is reported at that line."""
    copy = tmp_path / "src" / "expmatrix"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    target = copy / "report" / "__init__.py"
    text = target.read_text() + "\n\ndef _peek():\n    from expmatrix.training.trainer import Trainer\n"
    target.write_text(text)
    violations = check_tree(copy)
    assert [(v.file, v.line, v.module, v.rule.arrow) for v in violations] == [
        ("src/expmatrix/report/__init__.py", len(text.splitlines()), "expmatrix.report", "report -> training")
    ]
