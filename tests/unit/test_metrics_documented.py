"""docs/install.md's table of metrics names exactly what the operator exports."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.exported import exported_metric_names

INSTALL = Path(__file__).resolve().parents[2] / "docs" / "install.md"
ROW = re.compile(r"^\| (`[a-z_*]+`(?:, `[a-z_*]+`)*) \|")


def documented() -> set[str]:
    """The names in the first column of the table after "What `/metrics` exports:"."""
    text = INSTALL.read_text()
    table = text[text.index("What `/metrics` exports:") :].split("\n\n")[1]
    names: set[str] = set()
    for line in table.splitlines():
        if match := ROW.match(line):
            names.update(re.findall(r"`([a-z_*]+)`", match.group(1)))
    return names


def test_every_exported_metric_is_documented_and_every_documented_one_exported() -> None:
    patterns = documented()
    assert patterns, "no metrics table found in docs/install.md"

    def covered(name: str) -> bool:
        return any(re.fullmatch(p.replace("*", ".*"), name) for p in patterns)

    assert sorted(name for name in exported_metric_names() if not covered(name)) == []
    for pattern in patterns:
        regex = pattern.replace("*", ".*")
        assert any(re.fullmatch(regex, name) for name in exported_metric_names()), pattern
