"""Imports run one way: every module imports alone, and no chain of phenaki_cli imports comes back."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "phenaki_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def project_imports(path: Path) -> set[str]:
    """The phenaki_cli modules a file imports, at any depth (function-level imports too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            # `from phenaki_cli.cli import codec` imports the module phenaki_cli.cli.codec
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        found.update(n for n in names if n in MODULES)
    return found


def test_no_import_cycle():
    graph = {name: project_imports(path) - {name} for name, path in MODULES.items()}
    state: dict[str, str] = {}

    def visit(name: str, chain: list[str]) -> None:
        state[name] = "open"
        for dep in sorted(graph[name]):
            if state.get(dep) == "open":
                cycle = chain[chain.index(dep):] + [dep] if dep in chain else [name, dep]
                raise AssertionError("import cycle: " + " → ".join(cycle))
            if dep not in state:
                visit(dep, chain + [dep])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])


# one fresh interpreter for all of them: before each import every phenaki_cli module is dropped
# from sys.modules, so each is imported with none of its siblings loaded (third-party packages stay
# loaded: re-importing torch for each of 80 modules took most of a minute)
IMPORT_EACH = """
import importlib, json, sys, traceback
failed = {}
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "phenaki_cli" or m.startswith("phenaki_cli.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception:
        failed[name] = traceback.format_exc(limit=-2)
print(json.dumps(failed))
"""


def test_every_module_imports_alone():
    """No module relies on another phenaki_cli module having been imported first. (`__main__`
    runs the app; the next test starts it.)"""
    import json

    names = [n for n in MODULES if n != "phenaki_cli.__main__"]
    result = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    failed = json.loads(result.stdout.splitlines()[-1])
    assert not failed, "these modules fail to import alone:\n" + "\n".join(f"{k}: {v}" for k, v in failed.items())


def test_the_command_line_starts_every_way():
    for command in ([sys.executable, "-m", "phenaki_cli", "--help"],
                    [str(Path(sys.executable).with_name("phenaki")), "--help"]):
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and "train-tokenizer" in result.stdout, result.stderr
