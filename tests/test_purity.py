"""fsm/ is the functional core: its modules may import only pure modules. This walks every import in fsm/."""

from __future__ import annotations

import ast
from pathlib import Path

FSM = Path(__file__).resolve().parent.parent / "fsm"
# Everything fsm/ may import. `transitions` runs the rule table; it does no I/O on the path decide() takes.
ALLOWED = {"__future__", "dataclasses", "enum", "typing", "math", "collections", "fsm", "transitions"}


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            modules.add("." if node.level else node.module or "")
    return modules


def test_fsm_imports_only_pure_modules():
    offenders = {
        f"{path.name}: {module}"
        for path in sorted(FSM.glob("*.py"))
        for module in imported_modules(path)
        if module != "." and module.split(".")[0] not in ALLOWED
    }
    assert not offenders, f"fsm/ must stay pure; it imports {sorted(offenders)}"


def test_the_walker_sees_io_imports(tmp_path):
    sample = tmp_path / "bad.py"
    sample.write_text("import time\nfrom subprocess import run\nimport os.path\n")
    assert imported_modules(sample) == {"time", "subprocess", "os.path"}


def test_fsm_does_not_import_the_other_layers():
    for path in FSM.glob("*.py"):
        for module in imported_modules(path):
            assert module.split(".")[0] not in {"adapters", "runtime", "model"}, f"{path.name} imports {module}"
