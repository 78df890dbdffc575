"""Structure rules the code must keep (DESIGN.md): no module reaches into another's privates.

A name with one leading underscore is private to the module that defines it. Another module may
not import it (``from rltrade.x import _helper``), call it through a module alias
(``K._market(...)``), or read it off an object (``core._st``) unless this module defines that
name itself (its own classes' attributes). What another module needs becomes public where it is
owned. Third-party privates used on purpose are listed in ``ALLOWED`` with the reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "rltrade"

#: (module path relative to src/rltrade, attribute) -> why it is allowed
ALLOWED: dict[tuple[str, str], str] = {
    ("agents/algorithms.py", "_get_torch_save_params"):
        "Stable-Baselines3's own list of the torch modules it saves (no public equivalent)",
    ("envs/kernels.py", "_getvalue"):
        "numba's cgutils struct proxy: the documented way to read an LLVM value in an intrinsic",
}
#: the public API of named tuples (the underscore only avoids clashes with field names)
NAMEDTUPLE_API = frozenset({"_fields", "_field_defaults", "_asdict", "_replace", "_make"})


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_names(tree: ast.Module) -> set[str]:
    """Every private name this module defines: functions, classes, assignments (module, class
    and ``self.x`` attributes), parameters, keyword names, imported-as aliases."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif (isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store | ast.Del)
              and isinstance(node.value, ast.Name) and node.value.id in ("self", "cls")):
            names.add(node.attr)
        elif isinstance(node, ast.alias) and node.asname:
            names.add(node.asname)
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.isidentifier()):
            names.add(node.value)  # names in __slots__ / getattr strings of its own classes
    return {n for n in names if _private(n)}


def _violations(path: Path) -> list[str]:
    rel = path.relative_to(SRC).as_posix()
    tree = ast.parse(path.read_text(), filename=str(path))
    own = _defined_names(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rltrade"):
            for alias in node.names:
                if _private(alias.name):
                    found.append(f"{rel}:{node.lineno} imports {node.module}.{alias.name}")
        elif isinstance(node, ast.Attribute) and _private(node.attr):
            base = node.value
            if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                continue
            if node.attr in own or node.attr in NAMEDTUPLE_API or (rel, node.attr) in ALLOWED:
                continue
            verb = "reads" if isinstance(node.ctx, ast.Load) else "writes"
            found.append(f"{rel}:{node.lineno} {verb} {ast.unparse(node)}")
    return found


def test_no_cross_module_private_access() -> None:
    problems = [v for path in sorted(SRC.rglob("*.py")) for v in _violations(path)]
    assert not problems, (
        "modules reach into other modules' private names; make them public where they are "
        "owned (or a method of the owner):\n  " + "\n  ".join(problems)
    )


def test_the_scan_finds_each_kind_of_reach(tmp_path: Path) -> None:
    """The scan is not vacuous: an import, a module-alias call and an attribute read of a
    foreign private are each caught; the module's own privates are not."""
    sample = SRC / "_scan_probe_tmp.py"
    sample.write_text(
        "from rltrade.evaluation.metrics import _numeric\n"
        "from rltrade.sim import kernels as K\n"
        "class Own:\n"
        "    def __init__(self):\n"
        "        self._mine = 1\n"
        "    def ok(self, other):\n"
        "        return other._mine\n"
        "def f(core, manager):\n"
        "    K._market()\n"
        "    manager._counts = {}\n"
        "    return core._st\n"
    )
    try:
        found = _violations(sample)
    finally:
        sample.unlink()
    text = "\n".join(found)
    assert "imports rltrade.evaluation.metrics._numeric" in text
    assert "reads K._market" in text
    assert "reads core._st" in text
    assert "writes manager._counts" in text
    assert "_mine" not in text
