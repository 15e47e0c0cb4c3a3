"""The layers of DEVELOPERS.md, checked on every import of every project module (parsed, not run).

A module imports from its own layer's package and from lower layers only; the layer-2 libraries
(models, feeders, data_gen) do not import each other; entry points do not import each other.
"""

from __future__ import annotations

import ast
import importlib.util
import sysconfig
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]

# Module (or package: it covers its submodules) -> layer. A module takes its longest matching entry.
LAYERS: dict[str, int] = {
    # 0: names
    "common": 0,  # the empty package itself
    "common.constants": 0,
    # 1: utilities, and the format of a prepared split folder that its writers and readers share
    "common.io": 1,
    "common.locking": 1,
    "common.safe_pickle": 1,
    "common.representations": 1,
    "data_gen.manifest": 1,
    "data_gen.split_files": 1,
    # 2: libraries (the data_gen converters included: their ``main`` is their command line)
    "models": 2,
    "feeders": 2,
    "data_gen": 2,
    # 3: orchestration
    "moco": 3,
    "common.training": 3,
    "common.distributed": 3,
    "common.checkpoints": 3,
    "common.pretrained": 3,
    "common.knn": 3,
    "common.plots": 3,
    "common.evaluation": 3,
    "common.args": 3,
    "common.run_folder": 3,
    "common.cli": 3,
    "common.ledger": 3,
    # 4: entry points
    "main_moco_inter_skeleton": 4,
    "action_classification": 4,
    "action_retrieval": 4,
    "demo": 4,
    "scripts": 4,
    "bench": 4,
    # 5: the tests, which may import anything and which nothing imports
    "tests": 5,
}
ENTRY_POINT_LAYER = 4
LIBRARY_PACKAGES = ("models", "feeders", "data_gen")  # layer 2: none imports another
# Folders whose .py files are not the project's (virtual environments, build output).
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


def layer_of(name: str) -> int:
    keys = [key for key in LAYERS if name == key or name.startswith(key + ".")]
    if not keys:
        raise KeyError(f"{name} ({MODULES[name].relative_to(ROOT)}) has no layer in LAYERS")
    return LAYERS[max(keys, key=len)]


def package_of(name: str) -> str:
    return name.split(".")[0]


ALL_IMPORTS = [edge for name in MODULES for edge in imports_of(name)]


def _entry_point_imports() -> list[Import]:
    return [
        edge
        for edge in ALL_IMPORTS
        if layer_of(edge.importer) == ENTRY_POINT_LAYER == layer_of(edge.imported)
        and package_of(edge.importer) != package_of(edge.imported)
    ]


def test_the_walk_sees_the_whole_project():
    """The checks below run on every module: the known ones are there, and every one has a layer."""
    for name in (
        "common.constants",
        "data_gen.manifest",
        "feeders.datasets",
        "moco.step",
        "demo",
        "scripts.show_clip",
        "bench.bench_data_gen",
        "tests.test_layers",
    ):
        assert name in MODULES
    assert len(MODULES) > 60
    assert [name for name in MODULES if not any(name == k or name.startswith(k + ".") for k in LAYERS)] == []
    assert Import("feeders.datasets", "data_gen.manifest", 0)[:2] in {e[:2] for e in ALL_IMPORTS}
    assert Import("common.evaluation", "common.pretrained", 0)[:2] in {e[:2] for e in ALL_IMPORTS}
    assert Import("bench.bench_data_gen", "bench.literal_data_gen", 0)[:2] in {e[:2] for e in ALL_IMPORTS}


def test_imports_go_down_the_layers():
    upward = [
        f"{edge}: layer {layer_of(edge.importer)} -> {layer_of(edge.imported)}"
        for edge in ALL_IMPORTS
        if layer_of(edge.imported) > layer_of(edge.importer)
    ]
    assert upward == []


def test_library_packages_do_not_import_each_other():
    crossing = [
        str(edge)
        for edge in ALL_IMPORTS
        if layer_of(edge.importer) == layer_of(edge.imported) == 2
        and package_of(edge.importer) != package_of(edge.imported)
    ]
    assert crossing == []


def test_orchestration_in_common_does_not_import_moco():
    """moco uses common's distributed helpers; the other way round would make the two one tangle."""
    assert [
        str(edge)
        for edge in ALL_IMPORTS
        if package_of(edge.importer) == "common" and package_of(edge.imported) == "moco"
    ] == []


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


def test_entry_points_import_no_other_entry_point():
    """What two entry points share lives in a library; the demo runs the others as processes."""
    assert [str(edge) for edge in _entry_point_imports()] == []
