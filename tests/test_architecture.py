"""The package's layers: a folder is a layer, and no module imports a layer it must not know about.

Every import statement of every module is read (module level and inside functions alike, since a lazy
import is a dependency too) and checked against :data:`FORBIDDEN`. A new forbidden import fails here,
naming the module, the line and the rule it breaks.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "base"  # salbench/{config,errors,registry,runtime,scoped,saliency,progress}.py
LAYERS = ("data", "models", "methods", "metrics", "store", "stages", "report", "api")
# casme_utils: the masker (architecture, training, checkpoints) serves the methods layer; its embedded
# training opens a run's workspace, so it sits with the stages.
CASME = {"casme_utils.embedded": "stages"}

FORBIDDEN: dict[str, set[str]] = {
    BASE: set(LAYERS) | {"casme"},
    "store": {"data", "models", "methods", "metrics", "stages", "report", "api", "casme"},
    "data": {"models", "methods", "metrics", "stages", "report", "api", "casme"},
    "models": {"methods", "metrics", "stages", "report", "api", "casme"},
    "methods": {"metrics", "stages", "report", "api"},
    "metrics": {"methods", "stages", "report", "api", "casme"},
    "casme": {"metrics", "stages", "report", "api"},
    "report": {"data", "models", "methods", "metrics", "stages", "api", "casme"},
    "stages": {"api"},
    "api": set(),
}
"""Layer -> layers it must not import. Methods and metrics never import each other; the report knows
only results.csv (the store) and presentation; nothing below the stages imports them."""


def layer_of(module: str) -> str | None:
    """``salbench.metrics.base`` -> ``metrics``; base modules -> ``base``; other packages -> None."""
    if module in CASME:
        return CASME[module]
    parts = module.split(".")
    if parts[0] == "casme_utils":
        return "casme"
    if parts[0] != "salbench":
        return None
    if len(parts) == 1 or parts[1] == "__main__":
        return "entry"
    return parts[1] if parts[1] in LAYERS else BASE


def imports(path: Path) -> list[tuple[int, str]]:
    """``(line, imported module)`` of every import statement in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append((node.lineno, node.module))
            # ``from salbench import stages`` imports the sub-package ``salbench.stages``
            out += [(node.lineno, f"{node.module}.{a.name}") for a in node.names if node.module == "salbench"]
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
    return out


def modules() -> list[tuple[str, Path]]:
    found = []
    for package in ("salbench", "casme_utils"):
        for path in sorted((ROOT / package).rglob("*.py")):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found.append((name, path))
    return found


def violations(forbidden: dict[str, set[str]] = FORBIDDEN) -> list[str]:
    out = []
    for name, path in modules():
        mine = layer_of(name)
        for line, target in imports(path):
            theirs = layer_of(target)
            if mine in forbidden and theirs in forbidden[mine] and theirs != mine:
                out.append(f"{path.relative_to(ROOT)}:{line}: {mine} imports {target} ({theirs})")
    return out


def test_no_forbidden_import():
    assert violations() == []


def test_the_check_fails_on_a_forbidden_import(tmp_path, monkeypatch):
    """A metric importing a method (the rule the house was rebuilt for) is caught, with its line."""
    bad = tmp_path / "salbench" / "metrics" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import torch\n\n\ndef f():\n    from salbench.methods.base import MethodContext\n")
    monkeypatch.setattr(f"{__name__}.modules", lambda: [("salbench.metrics.bad", bad)], raising=True)
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert violations() == ["salbench/metrics/bad.py:5: metrics imports salbench.methods.base (methods)"]


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("salbench.config", BASE),
        ("salbench.scoped", BASE),
        ("salbench.store.maps", "store"),
        ("salbench.stages.cli", "stages"),
        ("casme_utils.architecture", "casme"),
        ("casme_utils.embedded", "stages"),
        ("torch.nn", None),
    ],
)
def test_layer_of(module, layer):
    assert layer_of(module) == layer


def test_folders_are_the_layers_and_modules_stay_small():
    """``ls salbench/`` shows the architecture; no module over ~400 lines without a stated reason."""
    folders = {p.name for p in (ROOT / "salbench").iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == {*LAYERS, "configs"}
    long = []
    for name, path in modules():
        text = path.read_text()
        if len(text.splitlines()) > 420 and "Longer than" not in (ast.get_docstring(ast.parse(text)) or ""):
            long.append(f"{name}: {len(text.splitlines())} lines")
    assert long == []
