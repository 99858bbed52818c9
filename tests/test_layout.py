"""The package's imports run one way: no module of nnback imports, directly or through
others, a module that imports it back (read from the source with ast, lazy imports
inside functions included)."""
import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "nnback"


def imports_of(path):
    """The nnback modules (by short name) that the module at ``path`` imports."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:  # from . import a, b
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("nnback."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith("nnback."))
    return found


def import_graph():
    modules = {path.stem: path for path in PACKAGE.glob("*.py") if path.stem != "__init__"}
    return {name: imports_of(path) & set(modules) - {name} for name, path in modules.items()}


def cycle_through(graph, start):
    """A list of modules from ``start`` back to it, or None."""
    stack = [(start, [start])]
    seen = set()
    while stack:
        module, trail = stack.pop()
        for imported in graph[module]:
            if imported == start:
                return trail + [start]
            if imported not in seen:
                seen.add(imported)
                stack.append((imported, trail + [imported]))
    return None


def test_no_module_imports_itself_through_others():
    graph = import_graph()
    assert {"backend", "backend_base", "model", "io", "fileformat"} <= set(graph)
    cycles = [cycle for cycle in (cycle_through(graph, name) for name in sorted(graph)) if cycle]
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(cycle) for cycle in cycles)


def test_the_bottom_modules_import_nothing_of_nnback_above_them():
    graph = import_graph()
    assert graph["backend_base"] == set() and graph["threads"] == set()
    assert graph["backend_numpy"] == {"backend_base"}
    assert graph["backend_cupy"] == {"backend_base", "_cupy_kernels"}
    assert "io" not in graph["model"] and "model" not in graph["fileformat"]


def test_only_the_backend_modules_import_cupy():
    importers = set()
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            if any(name == "cupy" or name.startswith("cupy.") for name in names):
                importers.add(path.stem)
    assert importers <= {"backend", "backend_base", "backend_numpy", "backend_cupy"}, importers


def private_uses_across_modules():
    """(module, name) for each ``other._name`` where ``other`` is an nnback module or an
    object of one imported by name (``from .x import y`` then ``y._name``): what check
    rule 'no module calls another's private names' forbids."""
    found = []
    for path in PACKAGE.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported.update(alias.asname or alias.name for alias in node.names)
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") \
                    and not node.attr.startswith("__") and isinstance(node.value, ast.Name) \
                    and node.value.id in imported:
                found.append((path.stem, f"{node.value.id}.{node.attr}"))
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_uses_across_modules() == []


def class_lines(module, name):
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    node = next(node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == name)
    return node.end_lineno - node.lineno + 1


def test_the_model_and_the_estimator_base_stay_small():
    """Issue 14's bounds: a class that a maintainer reads in one sitting (the training loop
    lives in training.py, input checks in validation.py and sklearn_input.py)."""
    assert class_lines("model", "Sequential") <= 300
    assert class_lines("estimators", "_BaseMLP") <= 300


def test_the_training_loop_is_in_one_place():
    """Only training.py loops over training steps: the model, the estimators, gradcheck and
    the benchmarks hand their data to its Trainer."""
    loops = []
    for path in PACKAGE.glob("*.py"):
        if path.stem == "training":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.For, ast.While)) and any(
                    isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and call.func.attr in ("step", "_step", "train_step", "compute_gradients",
                                           "epoch", "_run_epoch")
                    for call in ast.walk(node)):
                loops.append(f"{path.stem}.py:{node.lineno}")
    assert loops == []
    for module in ("model", "estimators", "gradcheck", "bench"):
        assert "Trainer(" in (PACKAGE / f"{module}.py").read_text(encoding="utf-8"), module


def documented_levels():
    """{module: level} from the table of docs/layout.md ("| 5 | `training.py` | ...")."""
    import re

    text = (PACKAGE.parent / "docs" / "layout.md").read_text(encoding="utf-8")
    levels = {}
    for level, modules in re.findall(r"^\| (\d+) \| ([^|]+) \|", text, flags=re.MULTILINE):
        for name in re.findall(r"`(\w+)\.py`", modules):
            levels[name] = int(level)
    return levels


def test_the_layout_page_lists_every_module_above_what_it_imports():
    graph, levels = import_graph(), documented_levels()
    assert sorted(graph) == sorted(levels), "docs/layout.md's table and nnback/ differ"
    for module, imported in graph.items():
        for other in imported:
            assert levels[other] < levels[module], \
                f"{module} (level {levels[module]}) imports {other} (level {levels[other]})"
