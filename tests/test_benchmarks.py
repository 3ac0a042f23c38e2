"""Every benchmark script still imports: they are run by hand, not by a test, so a renamed function in the
package would otherwise break them unseen (as `to_device`'s move to tokenizers/base.py once did)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(p.name for p in BENCHMARKS.glob("*.py")))
def test_the_benchmark_script_imports(script, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))  # their shared helper, timing.py, sits beside them
    spec = importlib.util.spec_from_file_location(f"benchmark_{Path(script).stem}", BENCHMARKS / script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports; `main()` only runs under `__main__`
    assert script == "timing.py" or callable(getattr(module, "main", None))
