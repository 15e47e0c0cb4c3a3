"""The layers are the folders: every import of every project module (parsed, not run) goes down.

    common/                      0  ground: constants, atomic I/O, locks, restricted unpickling, the split folder
    models/ feeders/ data_gen/   1  libraries, which never import each other
    moco/                        2  the method
    engine/                      3  what the commands share
    the commands                 4  the top-level scripts, scripts/, bench/: none imports another
    tests/                          may import anything; nothing imports them

An import from one folder into another must go to a lower layer; within a folder anything goes.
"""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"common": 0, "models": 1, "feeders": 1, "data_gen": 1, "moco": 2, "engine": 3}
COMMANDS = 4  # every other top-level module or folder
IGNORED_FOLDERS = {"__pycache__", "build", "dist", "venv", "node_modules"}


class Import(NamedTuple):
    importer: str
    imported: str
    line: int

    def __str__(self) -> str:
        return f"{self.importer} (line {self.line}) imports {self.imported}"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def project_files() -> dict[str, Path]:
    """Module name -> file of every project .py file."""
    files = {}
    for path in sorted(ROOT.rglob("*.py")):
        relative = path.relative_to(ROOT).parts
        if any(part.startswith(".") or part in IGNORED_FOLDERS for part in relative[:-1]):
            continue
        files[module_name(path)] = path
    return files


MODULES = project_files()


def _project_module(dotted: str) -> str | None:
    """The longest prefix of ``dotted`` that is a project module, if any."""
    parts = dotted.split(".")
    for end in range(len(parts), 0, -1):
        name = ".".join(parts[:end])
        if name in MODULES:
            return name
    return None


def imports_of(name: str) -> list[Import]:
    """Every project module ``name`` imports, anywhere in the file (functions and ``if`` blocks too)."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base for alias in node.names]
        else:
            continue
        for target in targets:
            module = _project_module(target)
            if module is not None and module != name:
                found.append(Import(name, module, node.lineno))
    return found


def folder_of(name: str) -> str:
    return name.split(".")[0]


def layer_of(name: str) -> int:
    return LAYERS.get(folder_of(name), COMMANDS)


ALL_IMPORTS = [edge for name in MODULES if folder_of(name) != "tests" for edge in imports_of(name)]


def test_the_walk_sees_the_whole_project():
    """The check below runs on every module: the known ones are there, and it sees their imports."""
    for name in ("common.constants", "common.manifest", "feeders.datasets", "moco.step", "engine.evaluation", "demo"):
        assert name in MODULES
    assert {"scripts.show_clip", "bench.bench_data_gen", "tests.test_layers"} <= set(MODULES)
    edges = {e[:2] for e in ALL_IMPORTS}
    assert ("feeders.datasets", "common.manifest") in edges
    assert ("bench.bench_data_gen", "bench.literal_data_gen") in edges
    assert not any(folder_of(importer) == "tests" for importer, _ in edges)


def test_imports_go_down_the_layers():
    """Across folders only downwards: no library imports another, no command imports another."""
    wrong = [
        f"{edge}: layer {layer_of(edge.importer)} -> {layer_of(edge.imported)}"
        for edge in ALL_IMPORTS
        if folder_of(edge.importer) != folder_of(edge.imported) and layer_of(edge.imported) >= layer_of(edge.importer)
    ]
    assert wrong == []


def test_no_command_imports_another():
    """Within the command layer too: a module with a ``main`` (a command) is imported by no other module."""
    commands = {
        name
        for name in MODULES
        if layer_of(name) == COMMANDS and folder_of(name) != "tests" and "\ndef main(" in MODULES[name].read_text()
    }
    assert {"demo", "action_retrieval", "scripts.ledger", "bench.bench_pretrain", "bench.device_check"} <= commands
    assert "bench.literal_data_gen" not in commands  # a library the benchmarks and the tests share
    assert [str(edge) for edge in ALL_IMPORTS if edge.imported in commands] == []


def test_the_check_catches_a_sideways_and_an_upward_import():
    def wrong(importer: str, imported: str) -> bool:
        return folder_of(importer) != folder_of(imported) and layer_of(imported) >= layer_of(importer)

    assert wrong("feeders.datasets", "data_gen.writer")  # sideways between libraries
    assert wrong("common.io", "engine.cli")  # upwards
    assert wrong("demo", "action_retrieval")  # one command into another
    assert not wrong("engine.evaluation", "feeders.datasets")
    assert not wrong("common.manifest", "common.split_folder")


def test_constants_import_nothing_but_the_standard_library():
    tree = ast.parse(MODULES["common.constants"].read_text(encoding="utf-8"))
    names = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    stdlib = Path(sysconfig.get_paths()["stdlib"]).resolve()
    outside = []
    for name in sorted(names):
        spec = importlib.util.find_spec(name)
        origin = spec.origin if spec is not None else None
        if origin in ("built-in", "frozen"):
            continue
        path = Path(origin).resolve() if origin else None
        if path and path.is_relative_to(stdlib) and not {"site-packages", "dist-packages"} & set(path.parts):
            continue
        outside.append(f"{name} ({origin})")
    assert outside == []
    assert "pathlib" in names  # the walk saw its imports
