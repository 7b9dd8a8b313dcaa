"""The library's shape: layers, no import cycles, no private imports across modules, modules of readable size.

The layer map below is the one place (with the README's layout table, which a test compares with it) that says
where each module belongs. A module may import from its own layer or a lower one, never from a higher one, and
the import graph has no cycle. Every import counts, function-local ones included: a cycle hidden inside a function
is still a cycle.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIB = ROOT / "calgrpo_lib"
PACKAGE = "calgrpo_lib"

#: lowest first; ``oracle`` stands for the package ``calgrpo_lib.oracle`` and all its modules
LAYERS: dict[str, tuple[str, ...]] = {
    "world": ("validation", "tasks", "arithmetic", "claims", "grounding", "data", "rewards", "steps",
              "tokenizers_zoo", "policy", "sampling", "sft_data", "policy_build", "lora", "rehearsal", "reward_model",
              "reward_model_eval", "reward_model_build", "hybrid_rewards", "prose_claims", "prose_solutions"),
    "math": ("advantages", "credit", "loss"),
    "spans": ("quotes", "granularity", "spans"),
    "oracle": ("oracle",),
    "loop": ("config", "memory", "preflight", "rollout", "checkpoints", "interrupts", "run_oracle", "scoring",
             "trainer", "metrics_log", "trl_engine"),
    "face": ("cli", "experiment", "viz", "widget_boxes", "advantage_plots", "curves", "tables", "exercises", "notebook",
             "doctor", "reward_plots", "conditions", "results_file", "contrasts", "colab", "__main__"),
}
MAX_LINES = 400
MAX_ORACLE_MODULES = 17  # 12 + `__main__` (`evaluate`) + `backends` + `prm` (PRMs) + `cascade` + `noise`


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _library_files() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(LIB.rglob("*.py"))}


def _resolve(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute module an ``ImportFrom`` reads from."""
    if node.level == 0:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, path: Path, known: set[str]) -> list[tuple[str, int, list[str]]]:
    """``(imported module, line, names)`` for every import of ``path`` (top-level and function-local) that reads
    from the library; ``from . import x`` of a submodule ``x`` counts as an import of that submodule."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno, []) for a in node.names if a.name.split(".")[0] == PACKAGE]
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node)
            if target.split(".")[0] != PACKAGE:
                continue
            names = [a.name for a in node.names]
            subs = [f"{target}.{n}" for n in names if f"{target}.{n}" in known]
            out += [(s, node.lineno, []) for s in subs]
            rest = [n for n in names if f"{target}.{n}" not in known]
            if rest or not subs:
                out.append((target, node.lineno, rest))
    return out


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) < 2:
        return None  # the package root
    for layer, names in LAYERS.items():
        if parts[1] in names:
            return layer
    return None


def _graph() -> dict[str, list[tuple[str, int, list[str]]]]:
    files = _library_files()
    known = set(files)
    return {m: _imports(m, p, known) for m, p in files.items()}


def test_every_library_module_has_a_layer() -> None:
    missing = [m for m in _library_files() if m != PACKAGE and _layer_of(m) is None]
    assert not missing, f"modules missing from LAYERS (tests/test_layers.py and the README's layout table): {missing}"
    listed = {n for names in LAYERS.values() for n in names}
    present = {m.split(".")[1] for m in _library_files() if m != PACKAGE}
    assert listed <= present, f"LAYERS names modules that do not exist: {sorted(listed - present)}"


def test_no_import_goes_up_a_layer() -> None:
    order = list(LAYERS)
    upward = []
    for module, imports in _graph().items():
        here = _layer_of(module)
        for target, line, _ in imports:
            there = _layer_of(target)
            if here is None:
                upward.append(f"{module}:{line} imports {target} (the package root imports nothing)")
            elif there is not None and order.index(there) > order.index(here):
                upward.append(f"{module}:{line} ({here}) imports {target} ({there})")
    assert not upward, "imports from a lower layer to a higher one:\n" + "\n".join(upward)


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_import_graph_has_no_cycle() -> None:
    graph = {m: {t for t, _, _ in imports if t != m} for m, imports in _graph().items()}
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    a = tmp_path / "a.py"
    a.write_text("def f():\n    from calgrpo_lib import b\n")
    found = _imports("calgrpo_lib.a", a, {"calgrpo_lib.a", "calgrpo_lib.b"})
    assert found == [("calgrpo_lib.b", 2, [])]
    assert _find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert _find_cycle({"x": {"y"}, "y": set()}) is None


def _private_names(path: Path, module: str, known: set[str]) -> list[str]:
    """Private names that ``path`` takes from another library module: ``from m import _x`` or ``m._x`` on a name
    bound to a library module."""
    tree = ast.parse(path.read_text(), str(path))
    bad, aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            target = _resolve(module, path, node) if module else (node.module or "")
            if target.split(".")[0] != PACKAGE:
                continue
            for a in node.names:
                if f"{target}.{a.name}" in known:
                    aliases.add(a.asname or a.name)
                elif a.name.startswith("_") and not a.name.startswith("__"):
                    bad.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {a.name} from {target}")
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] == PACKAGE and a.asname:
                    aliases.add(a.asname)
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno} uses {node.value.id}.{node.attr}")
    return bad


def test_no_private_name_is_imported_across_modules() -> None:
    known = set(_library_files())
    bad = []
    for module, path in _library_files().items():
        bad += _private_names(path, module, known)
    for path in sorted((ROOT / "bench").glob("*.py")):
        bad += _private_names(path, "", known)
    assert not bad, "private names used across modules:\n" + "\n".join(bad)


def test_no_library_module_is_over_the_size_limit() -> None:
    long = {str(p.relative_to(ROOT)): n for p in _library_files().values()
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines (split them by job): {long}"


def test_the_oracle_package_is_grouped_by_concept() -> None:
    modules = sorted(p.name for p in (LIB / "oracle").glob("*.py"))
    assert len(modules) <= MAX_ORACLE_MODULES, f"oracle/ has {len(modules)} modules: {modules}"


def _readme_layers() -> dict[str, set[str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Layout", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 2 and cells[0] in LAYERS:
            rows[cells[0]] = set(re.findall(r"`([A-Za-z_]+)/?`", cells[1]))
    return rows


def test_the_readme_layout_table_matches_the_layer_map() -> None:
    readme = _readme_layers()
    assert list(readme) == list(LAYERS), f"README layers {list(readme)} != {list(LAYERS)}"
    for layer, names in LAYERS.items():
        assert readme[layer] == set(names) - {"__main__"}, (layer, sorted(readme[layer]), sorted(names))
