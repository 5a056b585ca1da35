"""The map a reader follows is true: every dotted ``tlkeras.…`` name in the READMEs, the docs,
BENCHMARKS.md and the docstrings of the package and the tools resolves (a module, or an attribute
of one), and every name in ``tlkeras.__all__`` means the same object whatever was imported first."""

from __future__ import annotations

import ast
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# A dotted name that starts a word: not the tail of a path ("runs/tlkeras.x") or of another name.
NAME = re.compile(r"(?<![\w/.\-])tlkeras(?:\.[A-Za-z_]\w*)+")
# "tlkeras.egg-info", "tlkeras/..." and names ending in a file suffix are paths, not Python names.
FILE_SUFFIXES = {"py", "md", "json", "yaml", "yml", "html", "tflite", "txt", "csv", "keras", "h5", "j2", "ipynb", "toml",
                 "egg"}


def names_in(text: str):
    """The dotted tlkeras names in ``text``, without file paths."""
    for match in NAME.finditer(text):
        name, after = match.group(0), text[match.end():match.end() + 1]
        if after in {"/", "-"} or name.rsplit(".", 1)[1] in FILE_SUFFIXES:
            continue
        yield name


def documents() -> list[Path]:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "tools" / "README.md",
            REPO / "export" / "README.md", REPO / "notebooks" / "README.md", REPO / "BENCHMARKS.md"]
    return [p for p in docs if p.is_file()]


def docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc:
                yield doc


def referenced_names() -> dict[str, set[str]]:
    """``{dotted name: files that mention it}``."""
    found: dict[str, set[str]] = {}
    for path in documents():
        for name in names_in(path.read_text(encoding="utf-8")):
            found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    for path in [*sorted((REPO / "tlkeras").rglob("*.py")), *sorted((REPO / "tools").glob("*.py"))]:
        for doc in docstrings(path):
            for name in names_in(doc):
                found.setdefault(name, set()).add(str(path.relative_to(REPO)))
    return found


def resolves(name: str) -> bool:
    """True when the longest importable prefix of ``name`` is a module and the rest are its attributes."""
    parts = name.split(".")
    for cut in range(len(parts), 0, -1):
        module_name = ".".join(parts[:cut])
        try:
            obj = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name and (module_name == exc.name or module_name.startswith(exc.name + ".")):
                continue  # this prefix is not a module; try a shorter one
            raise  # the module exists but imports something missing: a real error, not a dead name
        for attribute in parts[cut:]:
            if not hasattr(obj, attribute):
                return False
            obj = getattr(obj, attribute)
        return True
    return False


def test_the_scanner_sees_names_and_skips_paths():
    text = ("call `tlkeras.train_model(cfg)`, run `python -m tlkeras.export runs/x`; see tlkeras/core/data.py, "
            "tlkeras.egg-info and runs/tlkeras.yaml; tlkeras.core.models.build_model.")
    assert list(names_in(text)) == ["tlkeras.train_model", "tlkeras.export", "tlkeras.core.models.build_model"]
    assert resolves("tlkeras.core.models.build_model") and resolves("tlkeras.export")
    assert not resolves("tlkeras.exporting.export_model") and not resolves("tlkeras.core.models.no_such_function")


def test_every_tlkeras_name_in_docs_and_docstrings_resolves():
    found = referenced_names()
    assert len(found) > 100, "the scanner found too few names to be looking in the right places"
    dead = {name: sorted(where) for name, where in sorted(found.items()) if not resolves(name)}
    assert not dead, "dead tlkeras names (rename them to where the thing lives now):\n" + "\n".join(
        f"  {name}  in {', '.join(where)}" for name, where in dead.items())


# Run in a fresh interpreter: imports every tlkeras module (packages bind themselves on their parent
# as they import), reading tlkeras.__all__ before or after, and reports what each name meant.
_PROBE = r"""
import importlib, json, pkgutil, sys
import tlkeras

names_first = sys.argv[1] == "names-first"
def meaning():
    out = {}
    for name in tlkeras.__all__:
        value = getattr(tlkeras, name)
        out[name] = [type(value).__name__, getattr(value, "__module__", None) or getattr(value, "__name__", None),
                     getattr(value, "__qualname__", None) or getattr(value, "__name__", None), id(value)]
    return out
before = meaning() if names_first else None
modules = [m.name for m in pkgutil.walk_packages(tlkeras.__path__, "tlkeras.") if not m.name.endswith("__main__")]
for name in modules:
    importlib.import_module(name)
after = meaning()
print(json.dumps({"modules": len(modules), "before": before, "after": after}))
"""


def _probe(order: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _PROBE, order], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def probes():
    return {order: _probe(order) for order in ("modules-first", "names-first")}


def test_no_public_name_is_a_package_name():
    import pkgutil

    import tlkeras

    submodules = {m.name for m in pkgutil.iter_modules(tlkeras.__path__)}
    assert not set(tlkeras.__all__) & submodules, "a verb with a package's name changes meaning with import order"


def test_all_names_mean_the_same_whatever_was_imported_first(probes):
    modules_first, names_first = probes["modules-first"], probes["names-first"]
    assert modules_first["modules"] > 100  # every module of the package was imported
    for name, (kind, module, qualname, _) in modules_first["after"].items():
        assert kind != "module", f"tlkeras.{name} is a module once every submodule is imported"
        before, after = names_first["before"][name], names_first["after"][name]
        assert before[3] == after[3], f"tlkeras.{name} changed from {before[:3]} to {after[:3]} after importing the package"
        assert before[:3] == [kind, module, qualname], f"tlkeras.{name}: {before[:3]} read first, {[kind, module, qualname]} read last"


def test_the_distill_verb_and_package_are_two_names():
    import tlkeras
    import tlkeras.distill.distillation as distillation

    assert tlkeras.distill_model is distillation.distill and callable(tlkeras.distill_model)
    assert tlkeras.distill is sys.modules["tlkeras.distill"]  # the package, as `import tlkeras.distill` binds it
    assert "distill" not in tlkeras.__all__
