"""The package's structure: no import cycle, the core never imports the CLI, public functions typed."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fairlandmark"


def _graph():
    grimp = pytest.importorskip("grimp")
    return grimp.build_graph("fairlandmark")  # counts function-level imports too


def _cycles(graph):
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    modules = sorted(m for m in graph.modules if m.startswith("fairlandmark"))
    index, low, on_stack, stack, out, counter = {}, {}, set(), [], [], [0]

    def edges(m):
        return sorted(graph.find_modules_directly_imported_by(m) & set(modules))

    for root in modules:
        if root in index:
            continue
        work = [(root, iter(edges(root)))]
        index[root] = low[root] = counter[0]; counter[0] += 1
        stack.append(root); on_stack.add(root)
        while work:
            node, it = work[-1]
            child = next(it, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        m = stack.pop(); on_stack.discard(m); comp.append(m)
                        if m == node:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
            elif child not in index:
                index[child] = low[child] = counter[0]; counter[0] += 1
                stack.append(child); on_stack.add(child)
                work.append((child, iter(edges(child))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return out


def test_no_import_cycle():
    graph = _graph()
    # The package root re-exports the facade; it is the entry point, not a layer.
    graph.remove_module("fairlandmark") if "fairlandmark" in graph.modules else None
    assert _cycles(graph) == []


def test_nothing_outside_the_cli_imports_it():
    graph = _graph()
    for module in graph.modules:
        if module.startswith("fairlandmark.cli") or not module.startswith("fairlandmark"):
            continue
        imported = graph.find_modules_directly_imported_by(module)
        assert not any(m.startswith("fairlandmark.cli") for m in imported), module


def test_cycle_finder_finds_a_planted_cycle():
    grimp = pytest.importorskip("grimp")
    graph = grimp.ImportGraph()
    for m in ("fairlandmark.a", "fairlandmark.b", "fairlandmark.c"):
        graph.add_module(m)
    graph.add_import(importer="fairlandmark.a", imported="fairlandmark.b")
    graph.add_import(importer="fairlandmark.b", imported="fairlandmark.a")
    graph.add_import(importer="fairlandmark.b", imported="fairlandmark.c")
    assert _cycles(graph) == [["fairlandmark.a", "fairlandmark.b"]]


def _public_functions():
    """(module, name, annotated) for every public function and method of the core (not the CLI)."""
    out = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        if rel.parts[1] == "cli":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        stack = [(node, False) for node in tree.body]
        while stack:
            node, in_class = stack.pop()
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                stack += [(child, True) for child in node.body]
            elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                if node.name.startswith("_"):
                    continue
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                args = [a for a in args if a.arg not in ("self", "cls")]
                annotated = node.returns is not None and all(a.annotation is not None for a in args)
                out.append((str(rel), node.name, annotated))
    return out


def test_public_core_functions_are_annotated():
    funcs = _public_functions()
    missing = [f"{m}:{n}" for m, n, ok in funcs if not ok]
    share = 1 - len(missing) / len(funcs)
    assert not missing, f"{share:.0%} annotated; not yet: {', '.join(missing[:40])}"
