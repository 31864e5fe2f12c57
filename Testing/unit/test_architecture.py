"""Architecture checks: MedAIExtension's own import graph has no cycles.

The graph is read with ``ast`` from the source files, so imports inside functions (which hide an arrow from a
reader but not from the interpreter) count as much as imports at the top of a file.  ``from X import Y`` is an
arrow to ``X.Y`` when ``X.Y`` is a module of its own, else to ``X``; relative imports are resolved against the
importing file.  An import of ``a.b.c`` also runs ``a/__init__`` and ``a/b/__init__``, but those implicit arrows
are not counted: the check is about the arrows a reader sees.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "MedAIExtension"

# File cycles not yet broken (not among issue 16's listed loops); the test fails if one disappears so the entry
# is removed, and fails on any other cycle.
KNOWN_FILE_CYCLES: list[list[str]] = []


def module_files(root: Path, package: str) -> dict[str, Path]:
    """Every module of ``package`` under ``root``, by dotted name (a package is named by its ``__init__``)."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _resolve_relative(module: str, is_package: bool, level: int, target: str | None) -> str:
    base = module.split(".") if is_package else module.split(".")[:-1]
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([target] if target else []))


def imports_of(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """The modules of ``known`` that ``source`` (the text of ``module``) imports, anywhere in the file."""
    known = set(known)

    def owner(name: str) -> str | None:
        # The longest known module that is ``name`` or one of its parents.
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            candidate = ".".join(parts[:end])
            if candidate in known:
                return candidate
        return None

    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                hit = owner(alias.name)
                if hit:
                    found.add(hit)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_relative(module, is_package, node.level, node.module) if node.level else node.module
            if not base:
                continue
            for alias in node.names:
                hit = owner(f"{base}.{alias.name}") if alias.name != "*" else owner(base)
                if hit:
                    found.add(hit)
    found.discard(module)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    files = module_files(root, package)
    return {
        name: imports_of(name, path.read_text(encoding="utf-8"), path.name == "__init__.py", files)
        for name, path in files.items()
    }


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative); only components of more than one node, each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            advanced = False
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    advanced = True
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(components)


def package_of(module: str, package: str = PACKAGE) -> str:
    """The node a module belongs to one level under ``package``: its sub-package or itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def package_graph(graph: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package_of(module)
        packages.setdefault(source, set())
        for target in targets:
            destination = package_of(target)
            if destination != source:
                packages[source].add(destination)
    return packages


def _edges_within(graph: Mapping[str, Iterable[str]], component: list[str]) -> list[str]:
    members = set(component)
    return [f"{a} -> {b}" for a in component for b in sorted(graph.get(a, ())) if b in members]


def _describe(graph: Mapping[str, Iterable[str]], components: list[list[str]]) -> str:
    return "\n".join(
        f"cycle {i}: {', '.join(c)}\n    " + "\n    ".join(_edges_within(graph, c)) for i, c in enumerate(components, 1)
    )


# --- the checks themselves work ---------------------------------------------------------------------------


def _toy_package(tmp_path: Path, files: dict[str, str]) -> dict[str, set[str]]:
    for relative, text in files.items():
        path = tmp_path / "toy" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return import_graph(tmp_path, "toy")


def test_toy_cycle_through_function_level_and_relative_imports_is_found(tmp_path):
    graph = _toy_package(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": "",
            "a/one.py": "from toy.b import two\n",
            "b/__init__.py": "",
            # A function-level relative import closes the loop.
            "b/two.py": "def f():\n    from ..a.one import something\n    return something\n",
            "c.py": "import toy.a.one\n",
        },
    )
    assert graph["toy.a.one"] == {"toy.b.two"}  # ``from toy.b import two`` resolves to the submodule
    assert graph["toy.b.two"] == {"toy.a.one"}
    assert graph["toy.c"] == {"toy.a.one"}
    assert strongly_connected(graph) == [["toy.a.one", "toy.b.two"]]
    assert strongly_connected(package_graph(graph)) == [["a", "b"]]


def test_toy_package_cycle_without_file_cycle_is_found(tmp_path):
    graph = _toy_package(
        tmp_path,
        {
            "__init__.py": "",
            "a/__init__.py": "",
            "a/one.py": "from toy.b.two import X\n",
            "a/three.py": "",
            "b/__init__.py": "",
            "b/two.py": "X = 1\ndef f():\n    import toy.a.three\n",
        },
    )
    assert strongly_connected(graph) == []
    assert strongly_connected(package_graph(graph)) == [["a", "b"]]


def test_toy_acyclic_graph_passes(tmp_path):
    graph = _toy_package(
        tmp_path,
        {
            "__init__.py": "",
            "a.py": "from toy import b\n",
            "b.py": "from . import c\n",
            "c.py": "import os\n",
        },
    )
    assert graph == {"toy": set(), "toy.a": {"toy.b"}, "toy.b": {"toy.c"}, "toy.c": set()}
    assert strongly_connected(graph) == []
    assert strongly_connected(package_graph(graph)) == []


# --- MedAIExtension ----------------------------------------------------------------------------------------


def test_graph_sees_function_level_imports():
    graph = import_graph()
    assert len(graph) > 100
    # parametric_map imports resample_array inside a function.
    assert "MedAIExtension.io.resample" in graph["MedAIExtension.dicom.parametric_map"]


def test_no_import_cycle_between_files():
    graph = import_graph()
    cycles = strongly_connected(graph)
    new = [c for c in cycles if c not in KNOWN_FILE_CYCLES]
    assert not new, "import cycles between MedAIExtension files:\n" + _describe(graph, new)
    gone = [c for c in KNOWN_FILE_CYCLES if c not in cycles]
    assert not gone, f"these cycles are broken now; remove them from KNOWN_FILE_CYCLES: {gone}"


def test_no_import_cycle_between_packages():
    """The packages one level under MedAIExtension (and its loose files) form a layered graph: no two of them
    import each other, directly or round a longer loop (e.g. dicom -> tracking -> dicom)."""
    graph = import_graph()
    packages = package_graph(graph)
    cycles = strongly_connected(packages)
    details = []
    for cycle in cycles:
        members = set(cycle)
        edges = [
            f"{m} -> {t}"
            for m, ts in sorted(graph.items())
            for t in sorted(ts)
            if package_of(m) in members and package_of(t) in members and package_of(m) != package_of(t)
        ]
        details.append(f"{' <-> '.join(cycle)}:\n    " + "\n    ".join(edges))
    assert not cycles, "packages importing each other:\n" + "\n".join(details)


#: Largest file in MedAIExtension (issue 16): rooms a newcomer can read; split along the seams beyond it.
MAX_FILE_LINES = 600


def test_no_file_in_the_package_is_over_the_line_limit() -> None:
    sizes = {
        path.relative_to(ROOT).as_posix(): len(path.read_text(encoding="utf-8").splitlines())
        for path in (ROOT / PACKAGE).rglob("*.py")
    }
    assert sizes, "no Python file found: the walk is broken"
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_FILE_LINES}
    assert not too_big, f"split these along their seams (limit {MAX_FILE_LINES} lines): {too_big}"


# --- MedAI's own imports sit at the top of files ---------------------------------------------------------------

#: Command dispatchers: each sub-command imports its package's work when it runs, so ``medai --help`` and a
#: worker started for one job load no other pipeline.
LAZY_BY_DESIGN = ("commands.py", "demo_commands.py", "cli.py", "worker.py")


def function_level_own_imports(source: str, package: str = PACKAGE) -> list[tuple[int, str]]:
    """``(line, text)`` of each import of ``package`` (absolute or relative) inside a function of ``source``."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for inner in ast.walk(node):
            own = (isinstance(inner, ast.ImportFrom) and (inner.level or (inner.module or "").startswith(package))) or (
                isinstance(inner, ast.Import) and any(a.name.startswith(package) for a in inner.names)
            )
            if own:
                found.append((inner.lineno, lines[inner.lineno - 1].strip()))
    return sorted(set(found))


def test_the_function_level_import_finder_works() -> None:
    source = (
        "from toy import a\n"
        "def f():\n    from toy.b import c\n    import toy.d\n    import os\n"
        "class K:\n    def m(self):\n        from . import e  # lazy: a reason\n"
    )
    assert [line for line, _ in function_level_own_imports(source, "toy")] == [3, 4, 8]


def test_own_imports_are_at_the_top_unless_a_reason_is_given() -> None:
    """A reader sees a file's arrows at its top; an import inside a function says why (``# lazy: <reason>``)."""
    hidden = []
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        if path.name in LAZY_BY_DESIGN:
            continue
        for line, text in function_level_own_imports(path.read_text(encoding="utf-8")):
            if "# lazy:" not in text:
                hidden.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not hidden, "move these imports to the top of their file, or say why not with '# lazy: <reason>':\n" + (
        "\n".join(hidden)
    )
