"""The layering of ARCHITECTURE.md, enforced: imports point down (kernels <- core <- adapters <- tools), no cycles.

The checker reads the source with ``ast`` (nothing is imported), so it sees every import, including the lazy ones
inside functions (they are edges too: a lazy import only hides a cycle until the function runs). Imports under
``if TYPE_CHECKING:`` are skipped: they never run.

Rules (one violation message each):
1. core (the top-level modules listed in CORE) imports neither an adapter nor a tool;
2. kernels import nothing from ``vqswitch`` outside ``vqswitch.kernels``;
3. adapters import no tool;
4. no import cycle among vqswitch's modules.
Every top-level module of ``vqswitch/`` must be classified here (core, or a tool re-export kept for an old import
path), so a new one is a decision, not an accident.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIRS = {"vqswitch": ROOT / "vqswitch", "vqswitch.adapters": ROOT / "adapters",
                "vqswitch.kernels": ROOT / "kernels"}

CORE = {"vqswitch", "vqswitch.quantizer", "vqswitch.router", "vqswitch.codebooks", "vqswitch.codes",
        "vqswitch.bits", "vqswitch.entropy", "vqswitch.distributed", "vqswitch.device", "vqswitch._checks",
        "vqswitch._io", "vqswitch.formats"}
# top-level modules that only re-export a tool under the import path users had before it moved (layer: tools)
MOVED = {"vqswitch.metrics", "vqswitch.identity", "vqswitch.container"}
TOOLS = {"codec", "train", "eval", "data", "publish", "cli", "experiments", "compat"}  # vqswitch.<tool>.*


# ------------------------------------------------------------------------------------------------ reading imports
def discover(package_dirs: dict[str, Path]) -> dict[str, Path]:
    """Module name -> file, for every .py under each package folder (a package's __init__ is the package)."""
    modules = {}
    for package, folder in package_dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            if any(p in ("build", "__pycache__") for p in rel.parts):
                continue
            name = ".".join([package] + parts)
            # a subfolder that is mapped to its own package (vqswitch/adapters would be a different thing)
            if name in modules:
                raise AssertionError(f"two files for module {name}: {modules[name]} and {path}")
            modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
           (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imported_names(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """Every absolute module name ``source`` imports (``from X import Y`` gives ``X.Y`` and ``X``), with its line."""
    found = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit_stmt(other)
                continue
            visit_stmt(child)

    def visit_stmt(child):
        if isinstance(child, ast.Import):
            found.extend((a.name, child.lineno) for a in child.names)
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[:len(base) - (child.level - 1)]
                prefix = ".".join(base + ([child.module] if child.module else []))
            else:
                prefix = child.module
            found.append((prefix, child.lineno))
            found.extend((f"{prefix}.{a.name}", child.lineno) for a in child.names if a.name != "*")
        visit(child)

    visit(ast.parse(source))
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported vqswitch module: first line}, each import resolved to the most specific known module."""
    graph = {}
    for name, path in modules.items():
        edges = {}
        for target, line in imported_names(path.read_text(encoding="utf-8"), name, path.name == "__init__.py"):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):  # a package's own parents run first
                edges.setdefault(target, line)
        graph[name] = edges
    return graph


# ------------------------------------------------------------------------------------------------ the rules
def layer(module: str) -> str:
    """'kernels', 'core', 'adapters' or 'tools'; ValueError for a top-level module nobody classified."""
    if module == "vqswitch.kernels" or module.startswith("vqswitch.kernels."):
        return "kernels"
    if module == "vqswitch.adapters" or module.startswith("vqswitch.adapters."):
        return "adapters"
    if module in CORE:
        return "core"
    if module in MOVED or module.split(".")[1] in TOOLS:
        return "tools"
    raise ValueError(f"{module} is in no layer: add it to CORE, MOVED or TOOLS in tests/test_layering.py "
                     "(and to ARCHITECTURE.md)")


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; sorted list."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []
    counter = [0]

    def strongconnect(v):
        work = [(v, iter(sorted(graph.get(v, ()))))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, children = work[-1]
            advanced = False
            for w in children:
                if w not in graph:
                    continue
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    component.append(w)
                    if w == node:
                        break
                if len(component) > 1:
                    out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            strongconnect(v)
    return sorted(out)


def violations(graph: dict[str, dict[str, int]]) -> list[str]:
    """Every broken rule of the module docstring, as readable lines (empty: the layering holds)."""
    found = []
    for module, edges in sorted(graph.items()):
        try:
            src = layer(module)
        except ValueError as err:
            found.append(str(err))
            continue
        for target, line in sorted(edges.items()):
            dst = layer(target) if target in graph else None
            if src == "kernels" and dst != "kernels":
                found.append(f"{module}:{line} imports {target}: kernels import only vqswitch.kernels")
            elif src == "core" and dst in ("adapters", "tools"):
                found.append(f"{module}:{line} imports {target}: core never imports {dst}")
            elif src == "adapters" and dst == "tools":
                found.append(f"{module}:{line} imports {target}: adapters never import a tool")
    for component in cycles(graph):
        found.append("import cycle: " + " -> ".join(cycle_path(graph, component)))
    return found


def cycle_path(graph: dict[str, dict[str, int]], component: list[str]) -> list[str]:
    """One closed import path through ``component`` (a cycle of :func:`cycles`), from its first module back."""
    start, members = component[0], set(component)
    parents, todo = {start: None}, [start]
    while todo:  # breadth first: the shortest way back to start
        v = todo.pop(0)
        for w in sorted(graph[v]):
            if w == start:
                path = [v]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                return path[::-1] + [start]
            if w in members and w not in parents:
                parents[w] = v
                todo.append(w)
    raise AssertionError(f"{component} is not a cycle")


# ------------------------------------------------------------------------------------------------ the tree
def test_the_tree_keeps_the_layering():
    modules = discover(PACKAGE_DIRS)
    assert "vqswitch.quantizer" in modules and "vqswitch.kernels" in modules and "vqswitch.adapters.swap" in modules
    problems = violations(import_graph(modules))
    assert not problems, "layering broken (ARCHITECTURE.md):\n  " + "\n  ".join(problems)


def test_a_cycle_added_to_a_copy_of_the_real_tree_fails(tmp_path):
    """The real tree, copied, with one lazy import added (publish calling back into the CLI): the test catches it."""
    import shutil

    dirs = {}
    for package, folder in PACKAGE_DIRS.items():
        dirs[package] = tmp_path / folder.name
        shutil.copytree(folder, dirs[package], ignore=shutil.ignore_patterns("__pycache__"))
    assert violations(import_graph(discover(dirs))) == []
    hub = dirs["vqswitch"] / "publish" / "hub.py"
    hub.write_text(hub.read_text() + "\n\ndef _back():\n    from vqswitch.cli import main\n")
    problems = violations(import_graph(discover(dirs)))
    assert len(problems) == 1 and problems[0].startswith("import cycle: ") and "vqswitch.publish.hub" in problems[0]
    assert "vqswitch.cli" in problems[0], problems


def test_every_core_module_exists():
    """CORE names real files: a renamed core module must be renamed here too, or the rules check nothing."""
    modules = discover(PACKAGE_DIRS)
    assert CORE <= set(modules), sorted(CORE - set(modules))


# ------------------------------------------------------------------------------------------------ the checker
def _tree(tmp_path: Path, files: dict[str, str]) -> dict[str, dict[str, int]]:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    dirs = {"vqswitch": tmp_path / "vqswitch", "vqswitch.adapters": tmp_path / "adapters",
            "vqswitch.kernels": tmp_path / "kernels"}
    for d in dirs.values():
        d.mkdir(exist_ok=True)
        (d / "__init__.py").touch()
    return import_graph(discover(dirs))


def test_a_cycle_is_caught_even_through_a_lazy_import(tmp_path):
    graph = _tree(tmp_path, {
        "vqswitch/cli/__init__.py": "from vqswitch.publish import push\n",
        "vqswitch/publish/__init__.py": "def push():\n    from vqswitch.cli import main  # lazy: still a cycle\n",
    })
    problems = violations(graph)
    assert problems == ["import cycle: vqswitch.cli -> vqswitch.publish -> vqswitch.cli"]


def test_a_relative_import_cycle_is_caught(tmp_path):
    graph = _tree(tmp_path, {"vqswitch/codec/a.py": "from . import b\n", "vqswitch/codec/b.py": "from .a import x\n"})
    assert violations(graph) == ["import cycle: vqswitch.codec.a -> vqswitch.codec.b -> vqswitch.codec.a"]


def test_upward_imports_are_caught(tmp_path):
    graph = _tree(tmp_path, {
        "vqswitch/quantizer.py": "import vqswitch.train.finetune\nfrom vqswitch.adapters import swap\n",
        "vqswitch/train/finetune.py": "",
        "adapters/swap.py": "from vqswitch.codec import compress\n",
        "vqswitch/codec/__init__.py": "compress = None\n",
        "kernels/ops.py": "from vqswitch.bits import index_bits\nfrom . import norms\n",
        "kernels/norms.py": "",
        "vqswitch/bits.py": "",
    })
    assert violations(graph) == [
        "vqswitch.adapters.swap:1 imports vqswitch.codec: adapters never import a tool",
        "vqswitch.kernels.ops:1 imports vqswitch.bits: kernels import only vqswitch.kernels",
        "vqswitch.quantizer:2 imports vqswitch.adapters: core never imports adapters",
        "vqswitch.quantizer:2 imports vqswitch.adapters.swap: core never imports adapters",
        "vqswitch.quantizer:1 imports vqswitch.train.finetune: core never imports tools",
    ]


def test_downward_imports_and_type_checking_imports_pass(tmp_path):
    graph = _tree(tmp_path, {
        "vqswitch/cli/__init__.py": "from vqswitch.codec import compress\nimport vqswitch.adapters.swap\n",
        "vqswitch/codec/__init__.py": "from vqswitch import quantizer\nfrom vqswitch.kernels import ops\n",
        "vqswitch/quantizer.py": ("from typing import TYPE_CHECKING\nfrom vqswitch.kernels import ops\n"
                                  "if TYPE_CHECKING:\n    from vqswitch.cli import main\n"),
        "adapters/swap.py": "from vqswitch.quantizer import Q\n",
        "kernels/ops.py": "from .norms import n\n",
        "kernels/norms.py": "",
    })
    assert violations(graph) == []
    assert graph["vqswitch.quantizer"] == {"vqswitch.kernels": 2, "vqswitch.kernels.ops": 2}  # no TYPE_CHECKING one


def test_an_unclassified_top_level_module_is_reported(tmp_path):
    assert violations(_tree(tmp_path, {"vqswitch/helpers.py": ""})) == [
        "vqswitch.helpers is in no layer: add it to CORE, MOVED or TOOLS in tests/test_layering.py "
        "(and to ARCHITECTURE.md)"]


def _reachable(graph, a, b):
    seen, todo = set(), [a]
    while todo:
        v = todo.pop()
        for w in graph.get(v, ()):
            if w == b:
                return True
            if w not in seen:
                seen.add(w)
                todo.append(w)
    return False


@settings(max_examples=150, deadline=None)
@given(st.integers(2, 8).flatmap(lambda n: st.tuples(
    st.just(n), st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=3 * n))))
def test_cycles_are_exactly_the_mutually_reachable_modules(case):
    """Property: two modules share a reported cycle iff each reaches the other (brute force on random graphs), and
    every reported path is a closed walk along real edges through its cycle's modules."""
    n, edges = case
    names = [f"vqswitch.codec.m{i}" for i in range(n)]
    graph = {name: {} for name in names}
    for a, b in edges:
        if a != b:
            graph[names[a]][names[b]] = 1
    together = {(a, b) for comp in cycles(graph) for a in comp for b in comp if a != b}
    expected = {(a, b) for a in names for b in names if a != b and _reachable(graph, a, b) and _reachable(graph, b, a)}
    assert together == expected
    for comp in cycles(graph):
        path = cycle_path(graph, comp)
        assert path[0] == path[-1] and set(path) <= set(comp)
        assert all(b in graph[a] for a, b in zip(path, path[1:]))


if __name__ == "__main__":  # print the graph: python tests/test_layering.py
    g = import_graph(discover(PACKAGE_DIRS))
    for m, e in sorted(g.items()):
        print(f"{m:40s} [{layer(m) if m else ''}] -> {', '.join(sorted(e))}")
    pytest.main([__file__, "-q"])
