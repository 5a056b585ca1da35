"""The package's layering: imports point down only, no cycles, no private names across packages,
CLIs are thin and start without TensorFlow.

Layers, bottom to top (a module may import its own layer's package and any layer below):

    base       errors, _backend, config, runs, cli
    core       tlkeras.core.*
    render     report (renders run folders into pages; every stage may write one)
    stage      train, evaluate, export, benchmark, doctor
    technique  optimize, adapt, distill, explain, heads, audit
    workflow   quickstart (composes stages and techniques into one run)
    search     tune

Every ``__main__.py`` (a CLI) sits above all of them: it may import any library module, but never
another CLI.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "tlkeras"

LAYERS = {
    "base": 0, "core": 1, "render": 2, "stage": 3, "technique": 4, "workflow": 5, "search": 6, "cli": 7,
}
GROUP_LAYER = {
    "errors": "base", "_backend": "base", "config": "base", "runs": "base", "cli": "base", "__init__": "base",
    "core": "core",
    "train": "stage", "evaluate": "stage", "export": "stage", "benchmark": "stage", "doctor": "stage",
    "optimize": "technique", "adapt": "technique", "distill": "technique", "explain": "technique",
    "heads": "technique", "audit": "technique", "report": "render",
    "quickstart": "workflow",
    "tune": "search",
}
CLIS = ["train", "evaluate", "export", "benchmark", "optimize", "tune", "adapt", "distill", "explain", "doctor", "audit"]

# Modules that may exceed MAX_LINES, each with why it is one thing.
MAX_LINES = 650
LARGE_OK: dict[str, str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _group(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _layer(module: str) -> int:
    if module.endswith(".__main__"):
        return LAYERS["cli"]
    return LAYERS[GROUP_LAYER[_group(module)]]


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported tlkeras module, names taken from it, line) for every import, nested ones included."""
    tree = ast.parse(MODULES[module].read_text())
    found = []
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("tlkeras"):
                    found.append((alias.name, [], node.lineno))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            if not base.startswith("tlkeras"):
                continue
            names = [a.name for a in node.names]
            # "from tlkeras.core import litert" imports the module tlkeras.core.litert
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in MODULES]
            if submodules:
                found.extend((s, [], node.lineno) for s in submodules)
                names = [n for n in names if f"{base}.{n}" not in MODULES]
                if not names:
                    continue
            found.append((base, names, node.lineno))
    return [(m, n, line) for m, n, line in found if m in MODULES]


def test_every_module_has_a_layer():
    unknown = sorted({_group(m) for m in MODULES} - set(GROUP_LAYER))
    assert not unknown, f"packages without a layer in this test: {unknown}"


def test_imports_point_down():
    problems = []
    for module in MODULES:
        for target, _, line in _imports(module):
            if target == "tlkeras":
                continue
            same_package = _group(target) == _group(module)
            if _layer(target) > _layer(module) or (
                _layer(target) == _layer(module) and not same_package and GROUP_LAYER[_group(module)] != "base"
            ):
                problems.append(f"{module}:{line} imports {target} (layer {_layer(target)} > {_layer(module)} or a sibling package)")
    assert not problems, "\n".join(problems)


def test_no_cli_imports_another_cli():
    problems = [
        f"{module}:{line} imports the CLI {target}"
        for module in MODULES
        for target, _, line in _imports(module)
        if target.endswith(".__main__") and target != module
    ]
    assert not problems, "\n".join(problems)


def test_no_private_names_across_packages():
    problems = []
    for module in MODULES:
        for target, names, line in _imports(module):
            if _group(target) == _group(module):
                continue
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private:
                problems.append(f"{module}:{line} takes {private} from {target}")
    assert not problems, "\n".join(problems)


def test_no_import_cycles():
    graph = {m: {t for t, _, _ in _imports(m) if t != m and t != "tlkeras"} for m in MODULES}
    # A package's __init__ is imported with each of its modules; it does not import them back here.
    state: dict[str, int] = {}
    cycles = []

    def visit(node, stack):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_modules_stay_small():
    big = {
        m: len(p.read_text().splitlines())
        for m, p in MODULES.items()
        if len(p.read_text().splitlines()) > MAX_LINES and m not in LARGE_OK
    }
    assert not big, f"modules over {MAX_LINES} lines: {big}; split them by what they do"


def test_only_backend_imports_tensorflow_and_friends():
    heavy = ("tensorflow", "tf_keras", "keras", "tensorflow_hub", "tensorflow_model_optimization", "keras_tuner")
    problems = []
    for module, path in MODULES.items():
        if module == "tlkeras._backend":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            for name in names:
                # Internals of a library _backend already imported (KerasTuner's distribute helpers) are fine.
                if name.split(".")[0] in heavy and not name.startswith("keras_tuner.src"):
                    problems.append(f"{module}:{node.lineno} imports {name}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("cli", CLIS)
def test_cli_starts_without_tensorflow(cli):
    code = (
        f"import sys, tlkeras.{cli}.__main__ as m; assert callable(m.main); "
        "heavy = [n for n in ('tensorflow', 'tf_keras', 'keras') if n in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing tlkeras.{cli}.__main__ imported {out.stdout.strip()}"


def test_every_cli_is_a_console_script():
    import tomllib

    scripts = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text())["project"]["scripts"]
    assert {f"tlkeras-{c}": f"tlkeras.{c}.__main__:main" for c in CLIS}.items() <= scripts.items()


MAX_FUNCTION_LINES = 120


def test_functions_stay_short():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{module}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines (split them into named steps): " + "; ".join(long)


def _module_aliases(module: str) -> dict[str, str]:
    """Local name -> tlkeras module for every module bound by an import in ``module`` (nested ones too)."""
    aliases = {}
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in MODULES and alias.asname:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                if f"{base}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{base}.{alias.name}"
    return aliases


def test_no_private_attributes_across_packages():
    """``litert._describe(...)`` from another package is the same breach as ``from litert import _describe``."""
    problems = []
    for module, path in MODULES.items():
        aliases = _module_aliases(module)
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)):
                continue
            target = aliases.get(node.value.id)
            if target is None or _group(target) == _group(module):
                continue
            if node.attr.startswith("_") and not node.attr.startswith("__"):
                problems.append(f"{module}:{node.lineno} uses {node.value.id}.{node.attr} of {target}")
    assert not problems, "\n".join(problems)
