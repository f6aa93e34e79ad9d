"""Every `Example::` in the SDK's docstrings runs as written against a real server (only the
address is swapped for the test server's), so the documentation cannot rot."""

from __future__ import annotations

import ast
import asyncio
import doctest
import importlib
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from serverproc import ServerProcess

import featviz

PACKAGE = Path(featviz.__file__).parent
DOCUMENTED = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _examples() -> Iterator[tuple[str, str, str]]:
    """(module, where, code) for each `Example::` block of the package's docstrings."""
    for path in sorted(PACKAGE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            docstring = ast.get_docstring(node) if isinstance(node, DOCUMENTED) else None
            if docstring and "Example::" in docstring:
                block = docstring.split("Example::", 1)[1]
                name = getattr(node, "name", "module")
                yield f"featviz.{path.stem}", f"{path.name}:{name}", textwrap.dedent(block)


EXAMPLES = list(_examples())


def test_every_public_client_method_has_an_example() -> None:
    documented = {where for _, where, _ in EXAMPLES}
    for module, cls in (("client.py", featviz.Client), ("aio.py", featviz.AsyncClient)):
        public = [name for name in vars(cls) if not name.startswith("_") and name != "close"]
        assert public and all(f"{module}:{name}" in documented for name in public)
        assert f"{module}:{cls.__name__}" in documented


@pytest.mark.parametrize(("module", "where", "code"), EXAMPLES, ids=[e[1] for e in EXAMPLES])
def test_the_example_runs(
    server: ServerProcess,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    module: str,
    where: str,
    code: str,
) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their files here
    code = code.replace('"localhost:50051"', repr(server.target))
    namespace = {**vars(importlib.import_module(module)), "featviz": featviz}
    awaits = "await " in code or "async for" in code
    if awaits and "asyncio.run" not in code:
        asyncio.run(_run_async(code, namespace, server.target))
    else:
        with featviz.Client(server.target) as client:
            exec(compile(code, where, "exec"), {**namespace, "client": client})
    printed = capsys.readouterr()
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert printed.out or printed.err or written, "the example showed nothing"
    assert all(
        path.read_bytes().startswith(b"\x89PNG") for path in written if path.suffix == ".png"
    )


async def _run_async(code: str, namespace: dict, target: str) -> None:
    """Run a fragment that awaits on `client` inside a coroutine with an AsyncClient."""
    wrapped = "async def example(client):\n" + textwrap.indent(code, "    ")
    exec(compile(wrapped, "example", "exec"), namespace)
    async with featviz.AsyncClient(target) as client:
        await namespace["example"](client)


@pytest.mark.parametrize(
    "module",
    sorted(path.stem for path in PACKAGE.glob("*.py") if ">>>" in path.read_text()),
)
def test_the_doctests_pass(module: str) -> None:
    outcome = doctest.testmod(importlib.import_module(f"featviz.{module}"))
    assert outcome.attempted >= 1 and outcome.failed == 0
