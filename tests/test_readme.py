"""The README keeps its top for the operator, and its links and pictures lead somewhere."""

import re

from lib.config import PROJECT_ROOT

README = PROJECT_ROOT / "README.md"


def test_the_operators_part_comes_first_and_stays_short():
    lines = README.read_text().splitlines()
    top = lines[: lines.index("## For developers")]
    assert len(top) < 150, f"the operator's part is {len(top)} lines"
    headings = [line for line in top if line.startswith("## ")]
    assert headings == ["## What each view answers", "## A real board", "## Configuration", "## Troubleshooting"]
    assert "![" in "\n".join(top[:30]), "a picture of the page near the top"


def test_every_relative_link_and_picture_exists():
    broken = []
    for doc in [README, *(PROJECT_ROOT / "docs").glob("*.md"), *(PROJECT_ROOT / "examples").rglob("*.md")]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if not re.match(r"[a-z]+:", target) and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(PROJECT_ROOT)}: {target}")
    assert not broken, broken
