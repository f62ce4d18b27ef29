"""softgen's modules form layers (softgen/__init__.py): nothing imports from a layer above
its own, not even inside a function, there are no import cycles, and importing the package
changes no environment variable.  In tests/, no file imports a test file."""
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "softgen"
TESTS = Path(__file__).resolve().parent

# (layer, modules or packages in it), bottom first; a package stands for its modules
LAYERS = (
    ("base", ("softgen.version", "softgen.dtypes", "softgen.timing", "softgen.targets", "softgen.ops", "softgen.ir",
              "softgen.numerics", "softgen.algorithms", "softgen.chunks")),
    ("lower", ("softgen.lower",)),
    ("backends", ("softgen.backends",)),
    ("runtime", ("softgen.runtime", "softgen.threads", "softgen.split", "softgen.masks")),
    ("tuning", ("softgen.tune",)),
    ("entry", ("softgen.api", "softgen.artifacts", "softgen.scipy", "softgen.dask", "softgen.cross_entropy",
               "softgen.topk")),
    ("tools", ("softgen.bench", "softgen.cli", "softgen.__main__", "softgen.torch", "softgen")),
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> int:
    """The index of the layer holding `module` (the longest matching name wins)."""
    matches = [(len(name), i) for i, (_, names) in enumerate(LAYERS) for name in names
               if module == name or module.startswith(name + ".")]
    assert matches, f"{module} is in no layer: add it to LAYERS here and in softgen/__init__.py"
    return max(matches)[1]


def imports(module: str) -> set[str]:
    """The softgen modules `module` imports anywhere in its file (functions included)."""
    tree = ast.parse(MODULES[module].read_text())
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import submodule` needs only the submodule; any other name, pkg itself
            for alias in node.names:
                found.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {name for name in found if name in MODULES and name != module}


GRAPH = {module: imports(module) for module in MODULES}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down(module):
    above = {name: LAYERS[layer(name)][0] for name in GRAPH[module] if layer(name) > layer(module)}
    assert not above, f"{module} ({LAYERS[layer(module)][0]}) imports from above: {above}"


def test_no_import_cycles():
    done, path = set(), []

    def visit(module):
        assert module not in path, f"import cycle: {' -> '.join(path[path.index(module):] + [module])}"
        if module in done:
            return
        path.append(module)
        for name in sorted(GRAPH[module]):
            visit(name)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


def test_the_parser_sees_relative_and_function_imports():
    assert "softgen.runtime" in GRAPH["softgen.tune"] and "softgen.lower" in GRAPH["softgen.tune"]
    assert "softgen.lower.plan" in GRAPH["softgen.lower.schedule"]   # from .plan import ...
    assert "softgen.lower.loopir" in GRAPH["softgen.backends.llvm.render"]    # from ...lower.loopir import ...


def test_importing_changes_no_environment_variable():
    script = ("import json, os, sys; before = dict(os.environ); "
              "import softgen, softgen.bench, softgen.cli, softgen.tune; "
              "after = dict(os.environ); "
              "print(json.dumps({k: [before.get(k), after.get(k)] for k in set(before) | set(after) "
              "if before.get(k) != after.get(k)}))")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "XLA_FLAGS")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PACKAGE.parent), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {}


def test_no_test_file_is_imported():
    """What test files share lives in tests/' other modules (reference, cc, ...) or in
    conftest.py's fixtures: importing a test file runs its module and ties the two files."""
    found = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            found += [f"{path.name}:{node.lineno} imports {name}" for name in names if name.startswith("test_")]
    assert not found, found
