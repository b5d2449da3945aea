"""Imports point one way: every `import` in jaxsink/ (function-local ones included) goes to the module's own
package or to a lower layer of `jaxsink.LAYERS`, no package imports itself in a cycle, and every module
imports cleanly on its own."""
import ast
import importlib
import pathlib

import pytest

import jaxsink

ROOT = pathlib.Path(__file__).resolve().parents[1]
# source folders and the package names they are installed as (pyproject's package-dir)
FOLDERS = {"jaxsink": ROOT / "jaxsink", "jaxsink.configs": ROOT / "configs", "jaxsink.experiments": ROOT / "experiments"}


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for package, folder in FOLDERS.items():
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join([package, *parts])
            if package == "jaxsink" and name.startswith(("jaxsink.configs", "jaxsink.experiments")):
                continue
            out[name] = path
    return out


MODULES = _modules()


def _targets(name: str, path: pathlib.Path) -> list[tuple[int, str]]:
    """(line, imported jaxsink module) for every import statement anywhere in the file."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(parent + ([base] if base else []))
            for a in node.names:
                sub = f"{base}.{a.name}"
                out.append((node.lineno, sub if sub in MODULES else base))
    return [(line, t) for line, t in out if t == "jaxsink" or t.startswith("jaxsink.")]


def _group(module: str) -> tuple[int, str]:
    """(layer index, group) of a module: the longest group name of `jaxsink.LAYERS` it falls under."""
    best = None
    for layer, groups in enumerate(jaxsink.LAYERS):
        for g in groups:
            inside = module == g or (g != "jaxsink" and module.startswith(g + "."))   # "jaxsink": __init__ only
            if inside and (best is None or len(g) > len(best[1])):
                best = (layer, g)
    assert best is not None, f"{module} is in no layer of jaxsink.LAYERS"
    return best


def test_every_module_is_in_a_layer_and_imports_cleanly():
    for name in MODULES:
        _group(name)
        importlib.import_module(name)


def test_imports_point_down():
    upward = []
    for name, path in MODULES.items():
        layer, group = _group(name)
        for line, target in _targets(name, path):
            t_layer, t_group = _group(target)
            if t_group != group and t_layer >= layer:
                upward.append(f"{path.relative_to(ROOT)}:{line}: {name} ({group}, layer {layer}) imports "
                              f"{target} ({t_group}, layer {t_layer})")
    assert not upward, "\n".join(upward)


def test_no_import_cycles_inside_a_package():
    graph = {name: {t for _, t in _targets(name, path) if t != name and t in MODULES}
             for name, path in MODULES.items()}
    state: dict[str, int] = {}

    def visit(node, trail):
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(trail[trail.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, trail + [nxt])
        state[node] = 2

    for name in graph:
        if name not in state:
            visit(name, [name])


def test_the_check_catches_an_upward_and_a_local_import(tmp_path):
    """The checker itself can fail: a function-local import of the probe from the model is flagged."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from jaxsink.probe import plots\n    return plots\n")
    assert _targets("jaxsink.model.bad", bad) == [(2, "jaxsink.probe.plots")]
    assert _group("jaxsink.probe.plots")[0] > _group("jaxsink.model.bad")[0]


def test_public_api_and_its_example_run():
    """Every name of `jaxsink.__all__` resolves, and the docstring's example runs as written."""
    import doctest
    import types
    for name in jaxsink.__all__:
        value = getattr(jaxsink, name)
        assert isinstance(value, types.ModuleType) == (name in ("stats", "experiments")), name
    result = doctest.testmod(jaxsink, verbose=False)
    assert result.attempted >= 5 and result.failed == 0
