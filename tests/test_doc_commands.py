"""Every shell command shown in README.md and docs/*.md runs as written.

The commands are read from the fenced ``bash`` / ``sh`` / ``console`` blocks (in a
``console`` block, the lines that start with ``$ ``). The documents' commands run in
order (README first), all in one sandbox that looks like the repository root with
``../shared/data`` beside it (links to the real files; outputs land in the sandbox), so a
later command may use an earlier one's output, as a reader would; a command that two
documents show alike (the README's sweep is also USAGE's) finds the first one's results
in the default result store, as the docs say it does, instead of training twice.

The marker: a command whose trailing comment starts with ``# [GPU``, ``# [long`` or
``# [cluster`` (e.g. ``# [long: ~40 min]``, ``# [GPU]``, ``# [cluster: a Ray head]``)
is deliberately not run here: it needs a GPU, takes too long for the default suite, or
needs a machine we do not have. The README says so too. Everything else must exit 0.
The README's own two set-up commands are what CI itself runs, so they are left out.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
MARKER = re.compile(r"#\s*\[(GPU|long|cluster)\b[^\]]*\]")
SETUP = {'python -m pip install -e ".[test,ray,parquet,hf]" -c constraints.txt', "python -m pytest"}
TIMEOUT_S = 600


@dataclass(frozen=True)
class Command:
    document: str
    line: int
    text: str

    @property
    def marked(self) -> bool:
        return bool(MARKER.search(self.text))


def shell_commands(text: str, document: str = "") -> list[Command]:
    """The commands of the shell blocks in one Markdown text, with their line numbers."""
    commands: list[Command] = []
    for match in re.finditer(r"^```(\w*)[^\n]*\n(.*?)^```", text, re.S | re.M):
        if match.group(1) not in SHELL_LANGUAGES:
            continue
        first_line = text[: match.start(2)].count("\n") + 1
        console = match.group(1) == "console"
        pending: list[str] = []
        start = 0
        for offset, line in enumerate(match.group(2).splitlines()):
            if not pending:
                if console:
                    if not line.startswith("$ "):
                        continue  # output shown under a command
                    line = line[2:]
                if not line.strip() or line.lstrip().startswith("#"):
                    continue
                start = first_line + offset
            pending.append(line)
            if not line.rstrip().endswith("\\"):
                commands.append(Command(document, start, "\n".join(pending)))
                pending = []
    return commands


def documented_commands() -> list[Command]:
    found = []
    for path in DOCUMENTS:
        found += [c for c in shell_commands(path.read_text(), path.name) if c.text.strip() not in SETUP]
    return found


def test_the_parser_reads_blocks_as_a_reader_would():
    text = (
        "Intro\n```bash\nforgetlab run   # a comment\n# only a comment\n\nforgetlab sweep \\\n    --workers 2\n```\n"
        "```console\n$ forgetlab list\nsome output\n```\n```python\nimport forgetlab\n```\n"
        "```\nnot a shell block\n```\n```bash\nforgetlab reproduce anatomy   # [long: ~40 min]\n```\n"
    )
    commands = shell_commands(text)
    assert [c.text for c in commands] == [
        "forgetlab run   # a comment", "forgetlab sweep \\\n    --workers 2", "forgetlab list",
        "forgetlab reproduce anatomy   # [long: ~40 min]",
    ]
    assert [c.line for c in commands] == [3, 6, 10, 20]
    assert [c.marked for c in commands] == [False, False, False, True]


def test_untagged_code_blocks_hold_no_commands():
    # A command in a block without a language would escape this test: tag it bash.
    for path in DOCUMENTS:
        text = path.read_text()
        for match in re.finditer(r"^```\n(.*?)^```", text, re.S | re.M):
            for line in match.group(1).splitlines():
                first = line.strip().split(" ")[0]
                assert first not in ("forgetlab", "python", "pip", "$"), (
                    f"{path.name}: the block with {line.strip()!r} has no language; mark it ```bash"
                )


def shared_data_folder() -> Path | None:
    for candidate in (os.environ.get("FORGETLAB_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "cifar-10-batches-py").is_dir():
            return Path(candidate)
    return None


def sandbox(tmp_path: Path, data: Path) -> Path:
    """A folder that looks like the repository root, with ../shared/data beside it."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for entry in ROOT.iterdir():
        if entry.name not in (".git", "forgetlab-results", "out"):
            (repo / entry.name).symlink_to(entry)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data)
    return repo


@pytest.fixture(scope="module")
def shared_sandbox(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """One sandbox (and environment) for every document's commands, in document order."""
    data = shared_data_folder()
    if data is None:
        pytest.skip("the real datasets are not in $FORGETLAB_DATA or ../shared/data")
    tmp_path = tmp_path_factory.mktemp("docs")
    repo = sandbox(tmp_path, data)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGETLAB_")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    # `~` in a command lands in the sandbox; the decoded-dataset cache stays shared (it is verified).
    env["XDG_CACHE_HOME"] = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    env["HOME"] = str(tmp_path / "home")
    (tmp_path / "home").mkdir()
    assert shutil.which("forgetlab", path=env["PATH"]), "the forgetlab command is not installed"
    return repo, env


@pytest.mark.slow
@pytest.mark.parametrize("document", [p.name for p in DOCUMENTS])
def test_documented_commands_run_as_written(document, shared_sandbox):
    commands = [c for c in documented_commands() if c.document == document]
    if not commands:
        pytest.skip(f"{document} shows no shell command")
    repo, env = shared_sandbox
    for command in commands:
        if command.marked:
            continue
        start = time.perf_counter()
        done = subprocess.run(
            ["bash", "-e", "-o", "pipefail", "-c", command.text], cwd=repo, env=env,
            capture_output=True, text=True, timeout=TIMEOUT_S,
        )
        took = time.perf_counter() - start
        print(f"{command.document}:{command.line}: {took:.1f} s: {command.text.splitlines()[0]}")
        assert done.returncode == 0, (
            f"{command.document} line {command.line}: `{command.text}` exited {done.returncode}:\n"
            f"{done.stderr[-3000:]}"
        )
