"""The commands shown in README.md and docs/, found and classified (pure; no cluster needed).

Every fenced block whose language is a shell (sh, console, powershell...) or YAML carries a
directive on the line before it (blank lines allowed in between), an HTML comment that renders
as nothing:

    <!-- check: MODE [ARG...] -->

Shell blocks:
- ``run``: executed as written (bash -euo pipefail) against the real local control plane, from
  a copy of the repository, with the real kubectl, helm and python on PATH; it must exit 0.
- ``background``: a long-running command (a watch, the operator): started as written, it must
  still be running after a few seconds; then it is stopped.
- ``check``: cannot run here (cloud CLIs, other operating systems, a live file server, network
  downloads). Every command in it is checked by its program's checker (``Checks``); a program
  without a checker fails the test.

YAML blocks:
- ``apply [NAME]``: every document goes through a server-side dry run (strict field
  validation); with NAME the block is then saved as that file in the working directory, so the
  commands after it (``kubectl apply -f NAME``) run for real.
- ``fragment FILE``: a partial DittoServer (``spec:`` ...) merged into FILE, then dry-run.
- ``values [NAME]``: a values file of the chart, rendered with ``helm template -f`` (its schema
  rejects unknown keys); saved as NAME like ``apply``.
- ``external``: objects of third-party APIs not installed here (cert-manager, MetalLB): their
  apiVersion and kind must be in ``EXTERNAL_KINDS`` with the required fields present.

Anything else fails: a shell or YAML block without a directive, an unknown mode, or a block
without a language whose lines look like commands.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]

SHELL_LANGS = frozenset(
    {"sh", "shell", "bash", "zsh", "console", "powershell", "ps1", "pwsh", "cmd"}
)
WINDOWS_LANGS = frozenset({"powershell", "ps1", "pwsh", "cmd"})
YAML_LANGS = frozenset({"yaml", "yml"})
SHELL_MODES = frozenset({"run", "background", "check"})
YAML_MODES = frozenset({"apply", "fragment", "values", "external"})

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,}|~{3,})\s*(?P<lang>[\w+-]*)")
_DIRECTIVE = re.compile(r"^\s*<!--\s*check:\s*(?P<body>.*?)\s*-->\s*$")
# A line of an untyped block that is surely a command: it deserves a language and a directive.
_LOOKS_LIKE_COMMAND = re.compile(
    r"^\s*(\$ |sudo |kubectl |helm |python3? |nox |scw |mount |podman |docker |curl )"
)
# Windows prompts in console-like blocks.
_PROMPT = re.compile(r"^\s*(\$|PS[^>]*>|[A-Z]:\\[^>]*>)\s?")


class DocError(ValueError):
    """A block breaks the convention; the message names the file and line."""


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown file."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    mode: str | None
    args: tuple[str, ...]

    @property
    def where(self) -> str:
        try:
            shown = self.path.relative_to(REPO)
        except ValueError:
            shown = self.path
        return f"{shown}:{self.line}"

    @property
    def is_shell(self) -> bool:
        return self.lang in SHELL_LANGS

    @property
    def is_yaml(self) -> bool:
        return self.lang in YAML_LANGS


def markdown_files(root: Path = REPO) -> list[Path]:
    """README.md, deploy/README.md, the chart's README and every Markdown file under docs/."""
    found = [root / "README.md", root / "deploy" / "README.md"]
    found.append(root / "deploy" / "helm" / "dittofs-operator" / "README.md")
    found += sorted((root / "docs").rglob("*.md"))
    return [path for path in found if path.is_file()]


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, with the directive above it (if any)."""
    lines = path.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        opening = _FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        fence = opening["fence"]
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not lines[j].strip().startswith(fence):
            body.append(lines[j])
            j += 1
        if j == len(lines):
            raise DocError(f"{path}:{i + 1}: unterminated code fence")
        mode, args = _directive(lines, i)
        indent = len(opening["indent"])
        text = "\n".join(line[indent:] if line[:indent].isspace() else line for line in body)
        found.append(Block(path, i + 1, opening["lang"].lower(), text + "\n", mode, args))
        i = j + 1
    return found


def _directive(lines: list[str], fence_index: int) -> tuple[str | None, tuple[str, ...]]:
    k = fence_index - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    if k < 0 or not (found := _DIRECTIVE.match(lines[k])):
        return None, ()
    words = found["body"].split()
    return (words[0], tuple(words[1:])) if words else (None, ())


def problems(block: Block) -> list[str]:
    """Why a block breaks the convention (empty when it does not)."""
    if block.is_shell:
        if block.mode is None:
            return [f"{block.where}: {block.lang} block without <!-- check: MODE --> directive"]
        if block.mode not in SHELL_MODES:
            return [f"{block.where}: unknown shell mode {block.mode!r} ({sorted(SHELL_MODES)})"]
        if block.lang in WINDOWS_LANGS and block.mode != "check":
            return [f"{block.where}: Windows commands cannot run here: use check"]
        return []
    if block.is_yaml:
        if block.mode is None:
            return [f"{block.where}: yaml block without <!-- check: MODE --> directive"]
        if block.mode not in YAML_MODES:
            return [f"{block.where}: unknown yaml mode {block.mode!r} ({sorted(YAML_MODES)})"]
        if block.mode == "fragment" and len(block.args) != 1:
            return [f"{block.where}: fragment needs the file it completes"]
        if block.mode != "fragment" and len(block.args) > 1:
            return [f"{block.where}: {block.mode} takes at most a file name to save it as"]
        return []
    if block.mode is not None:
        return [f"{block.where}: a directive on a {block.lang or 'plain'} block checks nothing"]
    if any(_LOOKS_LIKE_COMMAND.match(line) for line in block.text.splitlines()):
        return [f"{block.where}: commands in a {block.lang or 'plain'} block: use sh + check"]
    return []


# -- shell text -> simple commands ----------------------------------------------------------


def script(block: Block) -> str:
    """The text to execute: console blocks keep only their prompted lines (the rest is output)."""
    if block.lang != "console":
        return block.text
    kept: list[str] = []
    continuing = False
    for line in block.text.splitlines():
        if continuing:
            kept.append(line)
        elif prompt := _PROMPT.match(line):
            kept.append(line[prompt.end() :])
        else:
            continue
        continuing = line.rstrip().endswith("\\")
    return "\n".join(kept) + "\n"


@dataclass(frozen=True)
class Command:
    """One simple command: its words (after env assignments and sudo), and those assignments."""

    argv: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()

    @property
    def program(self) -> str:
        return self.argv[0] if self.argv else ""


SUBSTITUTION = "__SUBST__"


def commands(text: str, *, windows: bool = False) -> list[Command]:
    """Split shell text into simple commands, including those inside $( ... ).

    Handles backslash continuations, comments, quotes, `&&`, `||`, `;` and pipes; heredocs
    and subshells are refused (keep documented commands simple enough to check).
    """
    if "<<" in text:
        raise DocError("heredocs cannot be checked; show the file as a yaml block instead")
    found: list[Command] = []
    joined = re.sub(r"[\\`]\n", " ", text) if not windows else re.sub(r"`\n", " ", text)
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith(("#", "REM ", "::")):
            continue
        if windows:
            words = _windows_words(line)
            if words:
                found.append(Command(tuple(words)))
            continue
        outer, inner = _substitutions(line)
        for piece in inner:
            found += commands(piece)
        found += _simple_commands(outer)
    return found


def _windows_words(line: str) -> list[str]:
    lexer = shlex.shlex(line, posix=False)
    lexer.whitespace_split = True
    lexer.commenters = "#"
    lexer.escape = ""
    return list(lexer)


def _substitutions(line: str) -> tuple[str, list[str]]:
    """Replace every $( ... ) by a placeholder word; return the line and the inner texts."""
    inner: list[str] = []
    out: list[str] = []
    i = 0
    while i < len(line):
        if line.startswith("$(", i):
            depth, j = 1, i + 2
            while j < len(line) and depth:
                depth += {"(": 1, ")": -1}.get(line[j], 0)
                j += 1
            if depth:
                raise DocError(f"unbalanced $( in {line!r}")
            inner.append(line[i + 2 : j - 1])
            out.append(SUBSTITUTION)
            i = j
        else:
            out.append(line[i])
            i += 1
    return "".join(out), inner


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_OPERATORS = {"&&", "||", ";", "|", "&"}


def _simple_commands(line: str) -> list[Command]:
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    try:
        tokens = list(lexer)
    except ValueError as error:
        raise DocError(f"cannot parse {line!r}: {error}") from None
    found: list[Command] = []
    current: list[str] = []
    for token in [*tokens, ";"]:
        if token in _OPERATORS or set(token) <= set(";&|"):
            if current:
                found.append(_command(current))
            current = []
        else:
            current.append(token)
    return found


def _command(words: list[str]) -> Command:
    env: list[tuple[str, str]] = []
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env.append((name, value))
    while words and words[0] in ("sudo", "time", "exec"):
        words = words[1:]
    return Command(tuple(words), tuple(env))


# -- YAML blocks ------------------------------------------------------------------------------


def documents(block: Block) -> list[dict[str, Any]]:
    try:
        docs = [doc for doc in yaml.safe_load_all(block.text) if doc is not None]
    except yaml.YAMLError as error:
        raise DocError(f"{block.where}: invalid YAML: {error}") from None
    for doc in docs:
        if not isinstance(doc, dict):
            raise DocError(f"{block.where}: a YAML document must be a mapping")
    return docs


def merged(base: Any, fragment: Any) -> Any:
    """Deep merge of mappings (the fragment wins); lists and scalars are replaced."""
    if isinstance(base, dict) and isinstance(fragment, dict):
        result = dict(base)
        for key, value in fragment.items():
            result[key] = merged(base.get(key), value) if key in base else value
        return result
    return fragment


def walk(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (key, value) pair of nested mappings and lists."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield str(key), value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


@dataclass
class DocFacts:
    """What a document declares in its YAML (ports, shares), which its commands may use."""

    ports: set[int] = field(default_factory=set)
    shares: set[str] = field(default_factory=set)


# Keys that change the port a client uses: a static node port, a published Service port.
PORT_KEYS = frozenset({"nodePort", "servicePort"})


def facts(blocks_: list[Block]) -> DocFacts:
    found = DocFacts()
    for block in blocks_:
        if not block.is_yaml or block.mode not in ("apply", "fragment"):
            continue
        for doc in documents(block):
            for key, value in walk(doc):
                if key in PORT_KEYS and isinstance(value, int):
                    found.ports.add(value)
                if key == "shares" and isinstance(value, list):
                    found.shares |= {
                        s["name"] for s in value if isinstance(s, dict) and "name" in s
                    }
    return found
