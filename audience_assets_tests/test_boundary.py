"""The boundary of the core: no module under `audience_assets/core` (nor the stand-ins, nor the stack) imports Dagster,
and every import of the package follows its declared layers (`LAYERS`).

Each module is imported in a fresh interpreter, so nothing another test loaded can hide an import; the
test fails if `dagster` is then in `sys.modules`. The layers are read from the source (every import, at any
depth), so a lazy import inside a function counts too.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from audience_assets_tests.conftest import REPO

PACKAGE = REPO / "audience_assets"
DAGSTER_FREE = ("core", "standins", "infra")


def modules(folder: str) -> list[str]:
    found = []
    for path in sorted((PACKAGE / folder).rglob("*.py")):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__main__":
            continue
        found.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return found


@pytest.mark.parametrize("folder", DAGSTER_FREE)
def test_no_core_module_imports_dagster(folder: str):
    names = modules(folder)
    assert len(names) > 1
    probe = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "    loaded = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.') "
        "or m.startswith('dagster_'))\n"
        "    assert not loaded, f'{name} loads {loaded[:3]}'\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


# The layers, lowest first: a unit (a folder or module of `core`, or a top-level part of the package) imports only
# units of lower layers, never its own layer's others nor a higher one (so no cycle can form). Why this order:
# - leaves import nothing of the project (the policies among them: every layer may take one);
# - settings, the one reader of the environment, need only leaves, so every layer above may ask them;
# - scratch, then locks and DuckDB, then storage build on each other;
# - identity (Meta's normalization) needs only DuckDB;
# - the clean room (rule language, templates, protected queries) needs no project configuration: it is given
#   what it reads (`match.PartnerMatching`), and the configuration validates its rules in that language;
# - the configuration declares sources, audiences and tenants; the audience stage builds on it, ingestion on
#   both (consent columns are the audience stage's), Meta delivery on the audience stage's plans;
# - then the stack, the stand-ins, the Dagster layer, the code location, the headless runner and the commands.
LAYERS = [
    {"core.processes", "core.layout", "core.graph_api", "core.policies", "core.findings", "core.demo"},
    {"core.settings", "core.metrics"},
    {"core.scratch"},
    {"core.locks", "core.duck"},
    {"core.store"},
    {"core.identity"},
    {"core.cleanroom"},
    {"core.config"},
    {"core.audience"},
    {"core.ingestion", "core.meta"},
    {"infra"},
    {"standins"},
    {"defs"},
    {"definitions"},
    {"headless"},
    {"try_aws"},
    {"cli", "identity"},
    {"__main__"},
]


def unit(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "audience_assets" or len(parts) < 2 or parts[1:] == ["core"]:
        return None
    return f"core.{parts[2]}" if parts[1] == "core" else parts[1]


def import_edges() -> set[tuple[str, str, str]]:
    """(importing unit, imported unit, file) for every import in the package, at any depth of the code."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        here = unit(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            else:
                continue
            for name in names:
                there = unit(name)
                if there and there != here:
                    found.add((here, there, path.relative_to(REPO).as_posix()))
    return found


def test_imports_follow_the_layers():
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    edges = import_edges()
    undeclared = sorted({u for here, there, _ in edges for u in (here, there) if u not in layer})
    assert not undeclared, f"declare the layer of {undeclared} in LAYERS"
    upward = sorted(f"{file}: {here} imports {there}" for here, there, file in edges if layer[there] >= layer[here])
    assert not upward, "\n".join(upward)


def test_the_layer_check_sees_an_upward_import():
    """The check above can fail: the configuration importing the Meta client would be refused."""
    layer = {u: i for i, units in enumerate(LAYERS) for u in units}
    assert layer[unit("audience_assets.core.meta.client")] > layer[unit("audience_assets.core.config.load")]
    assert ("core.config", "core.meta") not in {(h, t) for h, t, _ in import_edges()}
    assert ("core.meta", "core.config") in {(h, t) for h, t, _ in import_edges()}  # the downward one is seen


def test_the_public_entry_points_keep_their_import_paths():
    """Other code relies on these: the identity API at `audience_assets.identity`, the clean room's rule and
    protected-query API, and the headless command's module."""
    from audience_assets.core.cleanroom.protected_query import Polling, run
    from audience_assets.core.cleanroom.rules import rule_from_policy
    from audience_assets.identity import meta_value, normalize

    assert normalize("EMAIL", "  Mary@Example.COM ") == "mary@example.com"
    assert meta_value("EMAIL", "mary@example.com") == (
        "f1904cf1a9d73a55fa5de0ac823c4403ded71afd4c3248d00bdcd0866552bb79"
    )
    assert rule_from_policy({"list": {"joinColumns": ["a"], "listColumns": ["b"]}}, ["a", "b"]).kind == "LIST"
    assert callable(run) and Polling(1, 2, 3).deadline == 3
    assert (REPO / "audience_assets" / "__main__.py").is_file()


def test_only_settings_reads_the_environment():
    """`core.settings` is the one reader of `os.environ` (and `os.getenv`): a setting read anywhere else would
    escape its validation at load, its one default and the harness's list of variables to clear."""
    readers = []
    for path in PACKAGE.rglob("*.py"):
        if path == PACKAGE / "core" / "settings.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "environb"):
                readers.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not readers, readers


def test_every_variable_the_docs_or_code_name_is_declared():
    """The documented variables, the `dg.EnvVar`s and the names the code passes around are all in `VARIABLES` (so
    the harness clears them and settings validate them), and every declared one is documented."""
    import re

    from audience_assets.core.settings import VARIABLES

    pattern = re.compile(r"\b(?:AUDIENCE|META|CLEANROOMS|ALERT)_[A-Z_]+[A-Z]\b")
    documented = set(pattern.findall((REPO / "README.md").read_text() + (REPO / "deploy/README.md").read_text()))
    in_code = {
        name
        for path in PACKAGE.rglob("*.py")
        for name in re.findall(r"[\"']((?:AUDIENCE|META|CLEANROOMS|ALERT)_[A-Z_]+[A-Z])[\"']", path.read_text())
    }
    not_variables = {"META_KEYS"}  # a table of Meta's keys, not a variable
    assert (documented | in_code) - not_variables - set(VARIABLES) == set()
    undocumented = set(VARIABLES) - documented - {"CLEANROOMS_ANALYSIS_TEMPLATE_ARN"}  # refused, with its fix
    assert not undocumented, f"document {sorted(undocumented)} in README.md or deploy/README.md"


# Functions allowed past MAX_FUNCTION_LINES: declarative tables, read as data, not logic (a split would scatter them).
DECLARED_TABLES = {
    "core/identity/stages.py::key_stages",  # each Meta key's normalization stages, one entry per key
}
MAX_FUNCTION_LINES = 60


def test_functions_do_one_job():
    """No function (nested ones counted on their own and in their parent) is over MAX_FUNCTION_LINES lines, except
    the declared tables."""
    long = []
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                name = f"{path.relative_to(PACKAGE).as_posix()}::{node.name}"
                if lines > MAX_FUNCTION_LINES and name not in DECLARED_TABLES:
                    long.append(f"{name} ({lines} lines)")
    assert not long, "split these into functions of one job:\n" + "\n".join(sorted(long))
