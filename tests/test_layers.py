"""
The package's layers are a contract, not a wish: `lint-imports` (import-linter) checks the
contract of .importlinter on the package as it is, fails on an import that runs back up (shown
on a copy of the package with one such import added), and no two modules import each other,
directly or around a longer circle (grimp's import graph, the one import-linter reads).
"""
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def _lint_imports(root: Path):
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", str(root / ".importlinter")],
        cwd=root, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"},
    )


def test_the_package_keeps_its_layers():
    proc = _lint_imports(REPO)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_import_from_a_lower_layer_to_a_higher_one_breaks_the_contract(tmp_path):
    shutil.copytree(REPO / "retina_plugin", tmp_path / "retina_plugin", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / ".importlinter", tmp_path / ".importlinter")
    # The model package reaching up into the command-line layer.
    (tmp_path / "retina_plugin" / "modeling" / "head.py").open("a").write("\nfrom ..cli.arguments import ToolParser  # noqa\n")
    proc = _lint_imports(tmp_path)
    assert proc.returncode == 1, proc.stdout[-4000:]
    assert "Each layer imports only the layers below it BROKEN" in proc.stdout
    assert "retina_plugin.modeling is not allowed to import retina_plugin.cli" in proc.stdout
    assert "retina_plugin.modeling.head -> retina_plugin.cli.arguments" in proc.stdout


def _circles(graph, modules):
    """Strongly connected sets of more than one module (Tarjan), each a circle of imports."""
    index, low, stack, on_stack, circles = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in graph.find_modules_directly_imported_by(module):
            if imported not in modules:
                continue
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return circles


def test_no_circle_of_imports_between_files():
    sys.path.insert(0, str(REPO))
    try:
        graph = grimp.build_graph("retina_plugin", cache_dir=None)
    finally:
        sys.path.remove(str(REPO))
    modules = graph.modules
    assert "retina_plugin.modeling.winograd" in modules and len(modules) > 60
    assert _circles(graph, modules) == []
