"""The house's edges: each pipeline stage is a package, and the lower layers do not pull in the
upper ones (a detector does not need the database to judge a reading)."""

import ast
import subprocess
import sys
from pathlib import Path


def _loaded_after(statement: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", f"import sys; {statement}; print(' '.join(sys.modules))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_detectors_do_not_load_the_database():
    loaded = _loaded_after("import lib.detect.detectors")
    assert "duckdb" not in loaded
    assert not any(m.startswith(("lib.store", "lib.page", "lib.ingest")) for m in loaded)


def test_the_vocabulary_imports_nothing_of_vigie():
    for module in ("lib.states", "lib.messages"):
        loaded = _loaded_after(f"import {module}")
        assert {m for m in loaded if m.startswith("lib.")} == {module}


# Lowest first. A module of lib/ imports its own package and the layers below its own, never a
# layer above nor a package beside it in its layer. The shared modules are below every stage; the
# transport below all who send or read messages; the store below what reads it back (detection
# restarting its events, evaluation); the page and the alerts on top.
LAYERS = (
    ("lib.config", "lib.runtime", "lib.states", "lib.messages", "lib.supervision"),
    ("lib.transport",),
    ("lib.ingest", "lib.store"),
    ("lib.detect",),
    ("lib.page", "lib.alerts"),
)
LIB = Path(__file__).resolve().parents[1] / "lib"


def _unit(module: str) -> str:
    """The layer entry a module belongs to: its stage package, or the shared module itself."""
    return ".".join(module.split(".")[:2])


def _imports() -> dict[str, set[str]]:
    """{module of lib/: modules it imports, at the top or inside a function}."""
    out = {}
    for path in LIB.rglob("*.py"):
        parts = path.relative_to(LIB.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                found.add(node.module)
        out[module] = found
    return out


def test_no_module_imports_upward():
    level = {unit: i for i, units in enumerate(LAYERS) for unit in units}
    imports = _imports()
    unplaced = {_unit(m) for m in imports} - set(level) - {"lib"}
    assert not unplaced, f"add {sorted(unplaced)} to LAYERS"
    wrong = []
    for module, found in imports.items():
        for target in found:
            if target.split(".")[0] in ("workers", "app", "views", "bench", "tests"):
                wrong.append(f"{module} -> {target}")
            elif target.startswith("lib.") and _unit(target) != _unit(module) and module != "lib":
                if level[_unit(target)] >= level[_unit(module)]:
                    wrong.append(f"{module} -> {target}")
    assert not wrong, wrong


def test_no_import_cycle():
    """Among lib/'s modules, counting imports inside functions too (a cycle hidden in a function
    still ties the two modules together)."""
    imports = _imports()
    graph = {m: {t for t in found if t in imports} - {m} for m, found in imports.items()}
    cycles, index, low, stack, on = [], {}, {}, [], set()

    def visit(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while not comp or comp[-1] != v:
                comp.append(stack.pop())
                on.discard(comp[-1])
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    assert not cycles, cycles


def test_transports_are_named_once_and_loaded_only_when_chosen():
    from lib import config
    from lib.transport import TRANSPORTS, transport_class
    from lib.transport.base import Transport

    assert config._CHOICES[("transport", "kind")] == tuple(TRANSPORTS)
    assert all(issubclass(transport_class(kind), Transport) for kind in TRANSPORTS)
    loaded = _loaded_after("import lib.transport.base, lib.transport.embedded, lib.store.sink")
    assert "kafka" not in loaded and not any(m.startswith("lib.transport.kafkabus") for m in loaded)


def test_the_readme_layout_table_names_every_module():
    """A newcomer who reads the README's layout finds each module; a module added without a word
    there fails here."""
    table = {}
    for line in (LIB.parent / "README.md").read_text().splitlines():
        if line.startswith("| `lib/"):
            path, what = line.split("|")[1:3]
            table[path.strip().replace("`", "")] = what
    missing = []
    for package in sorted(p for p in LIB.iterdir() if (p / "__init__.py").exists()):
        what = table.get(f"lib/{package.name}/")
        if what is None:
            missing.append(f"lib/{package.name}/ (no row)")
            continue
        for module in sorted(package.rglob("*.py")):
            name = module.parent.name + "/" if module.name == "__init__.py" else module.stem
            if module.parent != package and module.name != "__init__.py":
                continue  # a sub-package's modules: its row names the sub-package
            if module.parent == package and module.name == "__init__.py":
                continue
            if f"`{name}`" not in what:
                missing.append(f"lib/{package.name}/: {name}")
    top = table.get("lib/ (top)", "")
    missing += [f"lib/: {m.stem}" for m in LIB.glob("*.py") if m.stem != "__init__" and f"`{m.stem}`" not in top]
    assert not missing, missing
