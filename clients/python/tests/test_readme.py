"""Every ```python block of clients/python/README.md, run in order against a live mesh.

services/tickmesh/tests/it/sdk_python.rs starts `tickmesh up` on consecutive ports and runs this
with the addresses in TICKMESH_QUERY / TICKMESH_INGESTION / TICKMESH_COMPUTATION and the GOOG
daily CSV of the `backtesting` package in GOOG_CSV. By hand, against a `tickmesh up` on an
empty store (the README's first block stores the bars the others read):

    TICKMESH_QUERY=127.0.0.1:7404 TICKMESH_INGESTION=127.0.0.1:7401 \\
    TICKMESH_COMPUTATION=127.0.0.1:7402 GOOG_CSV=/path/to/GOOG.csv \\
    .venv/bin/python -m pytest -q clients/python/tests/test_readme.py

The blocks are written as a user reads them: `tickmesh up` on its default ports
(query 127.0.0.1:7404, ingestion 7401, computation 7402), a GOOG.csv in the working directory,
other paths relative to the repository root. Each documented address and data file is replaced
by the live one, explicitly: a block naming an address or a file this test does not know fails,
so the README cannot drift to something the test quietly runs differently. The blocks share one
namespace and run in the README's order (later ones use the `client` and frames of earlier
ones); each is its own test case, and the last test checks that every one of them ran.
"""

from __future__ import annotations

import os
import re
import signal
import traceback
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any, Dict, Iterator, List, Optional

import pytest

try:
    import tickmesh
except ImportError as e:  # pragma: no cover - the message is the point
    raise ImportError(
        f"{e}: the tickmesh package is not installed in this Python; "
        "run scripts/test.sh --install-only (it installs clients/python into .venv)"
    ) from e

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "clients" / "python" / "README.md"

# The addresses the README uses (tickmesh up's defaults), by the variable giving the live one.
ADDRESSES = {
    "127.0.0.1:7404": "TICKMESH_QUERY",
    "127.0.0.1:7401": "TICKMESH_INGESTION",
    "127.0.0.1:7402": "TICKMESH_COMPUTATION",
}
# Data files the README names as if in the working directory, by the variable giving the path.
FILES = {"GOOG.csv": "GOOG_CSV"}
# Anything that looks like a host:port, so that an address not in ADDRESSES is caught.
ADDRESS = re.compile(r"\b(?:\d{1,3}(?:\.\d{1,3}){3}|localhost|\[[0-9a-fA-F:]+\]):\d{1,5}\b")
# A string literal that names a file (by its extension): it must be in FILES or exist.
FILE_LITERAL = re.compile(r"""(["'])([^"'\n]+\.(?:csv|json|ya?ml|parquet|txt|db|feather))\1""")
# A block that runs longer than this is stuck (a stream without a break, a server not
# answering); generous for a loaded 2-core CI box, where the slowest block takes a few seconds.
BLOCK_SECONDS = 60
PYTHON_INFO = {"python", "py"}


@dataclass(frozen=True)
class Block:
    number: int  # 1-based among the README's python blocks
    line: int  # line of the block's first code line in README.md (1-based)
    info: str
    code: str

    @property
    def id(self) -> str:
        return f"block{self.number:02d}-line{self.line}"


def fenced_blocks(text: str) -> List[Block]:
    """Every fenced block of a Markdown text (``` at the start of a line), python or not;
    `number` counts the python ones (0 for the others)."""
    blocks: List[Block] = []
    lines = text.splitlines()
    i, python = 0, 0
    while i < len(lines):
        opening = re.match(r"^```(.*)$", lines[i])
        if opening is None:
            i += 1
            continue
        info = opening.group(1).strip()
        body_start = i + 1
        end = body_start
        while end < len(lines) and lines[end].rstrip() != "```":
            end += 1
        if end == len(lines):
            raise ValueError(f"{README}:{i + 1}: the fence opened here is never closed")
        is_python = info.split(" ")[0].lower() in PYTHON_INFO
        python += is_python
        blocks.append(
            Block(
                number=python if is_python else 0,
                line=body_start + 1,
                info=info,
                code="\n".join(lines[body_start:end]) + "\n",
            )
        )
        i = end + 1
    return blocks


ALL_BLOCKS = fenced_blocks(README.read_text(encoding="utf-8"))
BLOCKS = [b for b in ALL_BLOCKS if b.number]

# Shared by the blocks, as one script: a block sees what the blocks before it defined.
NAMESPACE: Dict[str, Any] = {"__name__": "__readme__"}
RAN: List[int] = []
FAILED: List[int] = []


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set: this test runs the README against a live mesh; "
            "services/tickmesh/tests/it/sdk_python.rs sets TICKMESH_QUERY, TICKMESH_INGESTION, "
            "TICKMESH_COMPUTATION and GOOG_CSV (see this file's docstring to run it by hand)"
        )
    return value


@pytest.fixture(scope="module")
def live() -> Iterator[Dict[str, str]]:
    """The live replacements of the README's addresses and files, checked first."""
    replacements = {documented: _env(name) for documented, name in ADDRESSES.items()}
    query = replacements["127.0.0.1:7404"]
    peers = (replacements["127.0.0.1:7401"], replacements["127.0.0.1:7402"])
    # The README's Client("127.0.0.1:7404") finds ingestion and computation by tickmesh up's
    # port layout (query - 3, query - 2); with the mesh on other ports those blocks would call
    # the wrong services, so say why instead of failing somewhere inside them.
    if tickmesh.peer_addresses(query) != peers:
        pytest.fail(
            f"the live mesh is not laid out as tickmesh up lays it out: query {query}, "
            f"ingestion / computation {peers}, not {tickmesh.peer_addresses(query)}; "
            "start it with --base-port N (consecutive ports), not --base-port 0"
        )
    for documented, name in FILES.items():
        path = _env(name)
        if not Path(path).is_file():
            pytest.fail(f"{name}={path}: no such file")
        replacements[documented] = path
    # Paths other than those are relative to the repository root, as the README says.
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        yield replacements
    finally:
        os.chdir(cwd)
        # The blocks' clients (the README's `client` stays open for the blocks after it).
        for value in NAMESPACE.values():
            if isinstance(value, tickmesh.Client):
                value.close()


def as_run(block: Block, replacements: Dict[str, str]) -> str:
    """The block's code with the documented addresses and files replaced by the live ones;
    fails on an address or a file it has no replacement for."""
    unknown = sorted(set(ADDRESS.findall(block.code)) - set(ADDRESSES))
    if unknown:
        pytest.fail(
            f"README block {block.number} (line {block.line}) names {', '.join(unknown)}: "
            f"use one of {', '.join(ADDRESSES)} (tickmesh up's defaults), or teach "
            "tests/test_readme.py the new address"
        )
    code = block.code
    for documented in ADDRESSES:
        code = code.replace(documented, replacements[documented])
    for quote, name in FILE_LITERAL.findall(block.code):
        if name in FILES:
            code = code.replace(f"{quote}{name}{quote}", repr(replacements[name]))
        elif not (ROOT / name).exists():
            pytest.fail(
                f"README block {block.number} (line {block.line}) reads {name!r}, which is "
                "neither a data file this test provides "
                f"({', '.join(FILES)}) nor a path under the repository root"
            )
    return code


class BlockTimeout(Exception):
    """A block ran longer than BLOCK_SECONDS (raised from SIGALRM in the main thread, where
    pytest runs the tests and grpcio's blocking waits let signal handlers run)."""


def _timeout(signum: int, frame: Optional[FrameType]) -> None:
    raise BlockTimeout(
        f"still running after {BLOCK_SECONDS} s (a stream without a break? a call that hangs?)"
    )


def test_every_fenced_block_of_the_readme_says_its_language() -> None:
    # An unlabelled block would be left out of the python ones without anyone noticing.
    unlabelled = [b.line for b in ALL_BLOCKS if not b.info]
    assert not unlabelled, f"{README}: fenced blocks without a language at lines {unlabelled}"
    assert BLOCKS, f"{README} has no ```python block"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_against_the_live_mesh(block: Block, live: Dict[str, str]) -> None:
    if FAILED:
        pytest.fail(
            f"README block {block.number} (line {block.line}) not run: block {FAILED[0]} before "
            "it failed, and the blocks build on each other",
            pytrace=False,
        )
    code = as_run(block, live)
    # Blank lines in front, so a traceback's line numbers are the README's own and its source
    # lines are shown from README.md.
    compiled = compile("\n" * (block.line - 1) + code, str(README), "exec")
    failure = None
    previous = signal.signal(signal.SIGALRM, _timeout)
    signal.setitimer(signal.ITIMER_REAL, BLOCK_SECONDS)
    try:
        exec(compiled, NAMESPACE)
    except Exception as e:  # every failure is reported with the block's number and text
        failure = f"{type(e).__name__}: {e}\n--- traceback:\n{traceback.format_exc()}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    if failure is not None:
        FAILED.append(block.number)
        pytest.fail(
            f"README block {block.number} (line {block.line}) failed: {failure}"
            f"--- the block as run:\n{code}",
            pytrace=False,
        )
    RAN.append(block.number)


def test_every_python_block_ran() -> None:
    # Runs last (pytest keeps the file's order): a block that was deselected, skipped or never
    # collected would otherwise go unnoticed.
    assert len(BLOCKS) > 0
    assert RAN == [b.number for b in BLOCKS], (
        f"{len(BLOCKS)} python blocks in {README}, ran {RAN}, failed {FAILED}"
    )
