"""The import rule of ARCHITECTURE.md, checked on the source of every module of ``extractor/`` and ``index/``.

``extractor/`` is one sub-package per concern and imports only go down the order that ARCHITECTURE.md states
(``errors`` → ``util/`` → ... → ``cli/``); ``index/`` uses the layers up to ``store/`` and never ``embed/``,
``heads/`` or ``cli/``; ``extractor`` never imports ``index`` (the CLI's ``COMMANDS`` table names its commands as
strings, loaded lazily). Every import counts: at module level, inside functions and under ``TYPE_CHECKING``, and
``importlib.import_module("...")`` with a literal name. A name taken from a package root (``from extractor import
load_dataset``) counts as an import of the module that defines it (the root's ``_API`` table).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("extractor", "index")
INDEX_MAY_USE_UP_TO = "store"  # index/ sits beside embed/ and heads/


def _doc_order() -> list[str]:
    """The sub-packages of ``extractor/`` in ARCHITECTURE.md's import order (lowest first)."""
    text = (REPO / "ARCHITECTURE.md").read_text(encoding="utf-8")
    line = next(line for line in text.splitlines() if line.startswith("`errors` →"))
    return [name.rstrip("/") for name in re.findall(r"`([a-z_]+/?)`", line)]


ORDER = _doc_order()
RANK = {name: rank for rank, name in enumerate(ORDER)}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for package in PACKAGES for p in sorted((REPO / package).rglob("*.py"))}


MODULES = _modules()


def _lazy_api(package: str) -> dict[str, str]:
    """A package root's ``_API`` table: public name -> the module that defines it."""
    tree = ast.parse((REPO / package / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        if any(isinstance(t, ast.Name) and t.id == "_API" for t in targets) and node.value is not None:
            return ast.literal_eval(node.value)
    return {}


API = {package: _lazy_api(package) for package in PACKAGES}


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (a package root's re-exported name resolved to its defining module)
    line: int


def _resolve(source: str, is_package: bool, module: str | None, level: int) -> str:
    """The absolute module name of ``from <level dots><module> import ...`` in ``source``."""
    if level == 0:
        return module or ""
    base = source.split(".") if is_package else source.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, module] if module else base)


def _targets(module: str, names: list[str]) -> list[str]:
    """What ``from module import names`` really imports: submodules, or the defining module of a root's name."""
    found = []
    for name in names:
        if f"{module}.{name}" in MODULES:
            found.append(f"{module}.{name}")
        elif module in API and name in API[module]:
            found.append(API[module][name])
        else:
            found.append(module)
    return found


def _imports(name: str, path: Path) -> list[Import]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    found: list[Import] = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = _resolve(name, is_package, node.module, node.level)
            targets = _targets(module, [alias.name for alias in node.names])
        elif (
            isinstance(node, ast.Call)
            and ast.unparse(node.func) in ("importlib.import_module", "import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            targets = [node.args[0].value]
        found += [Import(name, t, node.lineno) for t in targets if t.split(".")[0] in PACKAGES]
    return found


ALL_IMPORTS = [imp for name, path in MODULES.items() for imp in _imports(name, path)]


def _layer(module: str) -> str:
    """``extractor.store.reader`` -> ``store``; ``extractor`` (the root) -> ``extractor``; ``index.*`` -> ``index``."""
    parts = module.split(".")
    if parts[0] == "index":
        return "index"
    return parts[1] if len(parts) > 1 else "extractor"


def _violation(imp: Import) -> str | None:
    src, dst = _layer(imp.source), _layer(imp.target)
    where = f"{imp.source}:{imp.line} imports {imp.target}"
    if src == "extractor":  # the root re-exports the Python API: it may name any extractor module
        return f"{where}: extractor never imports index" if dst == "index" else None
    if dst == "extractor":  # the root's own names (__version__): nothing above anything
        return None
    if src == "index":
        if dst == "index" or RANK[dst] <= RANK[INDEX_MAY_USE_UP_TO]:
            return None
        return f"{where}: index/ may use up to {INDEX_MAY_USE_UP_TO}/, never {dst}/"
    if dst == "index":
        return f"{where}: extractor never imports index (the CLI names index's commands as strings only)"
    if RANK[dst] > RANK[src]:
        return f"{where}: {src}/ may not import {dst}/, which comes after it in ARCHITECTURE.md's order"
    return None


def test_the_documented_order_names_every_sub_package_of_extractor() -> None:
    packages = {p.parent.name for p in (REPO / "extractor").glob("*/__init__.py")}
    modules = {p.stem for p in (REPO / "extractor").glob("*.py") if p.stem != "__init__"}
    assert ORDER[0] == "errors"
    assert set(ORDER) == packages | modules, "ARCHITECTURE.md's import order must place every part of extractor/"
    design = " ".join((REPO / "docs" / "design.md").read_text(encoding="utf-8").split())
    assert re.search(r"`errors` → " + r".*?→ ".join(f"`{name}/`" for name in ORDER[1:]), design), (
        "docs/design.md states the same import order as ARCHITECTURE.md"
    )


def test_imports_only_go_down_the_package_order() -> None:
    assert len(MODULES) > 40 and len(ALL_IMPORTS) > 150  # the walk found the code
    violations = [v for v in map(_violation, ALL_IMPORTS) if v]
    assert not violations, "\n".join(violations)


def test_extractor_names_index_only_in_the_cli_command_table() -> None:
    """The one way extractor reaches index: ``extractor.cli.COMMANDS`` strings, imported when a command runs."""
    from extractor.cli import COMMANDS

    lazy = {spec.split(":")[0] for spec in COMMANDS.values()}
    assert lazy & set(MODULES) == lazy, "every COMMANDS entry names an existing module"
    assert {m for m in lazy if m.startswith("index")} == {"index.cli"}
    mentions = []
    for name, path in MODULES.items():
        if name.startswith("extractor"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("index."):
                    mentions.append(f"{name}:{node.lineno} {node.value!r}")
    assert all(m.startswith("extractor.cli:") for m in mentions), mentions


def test_no_import_cycles_at_import_time() -> None:
    """Module-level imports (not those inside functions or under TYPE_CHECKING) form no cycle."""
    graph: dict[str, set[str]] = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
        for imp in [i for i in _imports(name, path) if any(i.line == n.lineno for n in top)]:
            target = imp.target
            while target not in MODULES and "." in target:  # `from pkg.mod import name` of a non-module
                target = target.rsplit(".", 1)[0]
            if target != name:
                graph[name].add(target)
                parts = target.split(".")  # importing a module runs its packages' __init__ first (but not a
                parents = {".".join(parts[:i]) for i in range(1, len(parts))}  # package of this module, running)
                graph[name].update(p for p in parents if not f"{name}.".startswith(f"{p}."))

    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join([*stack[stack.index(nxt) :], nxt]))
            if nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


def test_the_checker_finds_what_it_should(tmp_path: Path) -> None:
    """The rule catches an upward import, a re-exported name, a relative import and index reaching heads/."""
    cases = {
        ("extractor.store.reader", "from extractor.embed.job import EmbedJob"): "store/ may not import embed/",
        ("extractor.network.model", "from extractor import embed_folder"): "network/ may not import embed/",
        ("extractor.images.decode", "from ..heads import api"): "images/ may not import heads/",
        ("index.search", "from extractor.heads.api import predict_files"): "never heads/",
        ("extractor.embed.job", "import index.search"): "extractor never imports index",
        ("extractor.util.atomic", "importlib.import_module('extractor.cli')"): "util/ may not import cli/",
    }
    for (module, code), message in cases.items():
        path = tmp_path / "mod.py"
        path.write_text(code + "\n")
        found = [v for v in map(_violation, _imports(module, path)) if v]
        assert found and message in found[0], (module, code, found)
    path.write_text("from extractor import __version__\nfrom extractor.errors import AlexfeatError\n")
    assert not [v for v in map(_violation, _imports("extractor.network.spec", path)) if v]
