"""The README is the front door: one screen, every link alive, and a package map equal to the tree.

Links are checked the way GitHub renders them: relative to the file that holds them, and an `#anchor` must be
the slug of a heading in the target (lower case, punctuation dropped, spaces as hyphens, `-1`, `-2` … for
repeats). Code blocks, inline code and HTML comments hold commands, not links, and are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
PACKAGE = REPO / "src" / "stylegan_transfer"
PAGES = [README, *sorted(DOCS.glob("*.md"))]
README_LIMIT = 12_000  # bytes: one screen that orients, the rest lives in docs/

LINK = re.compile(r"!?\[(?:[^\]\[]|\[[^\]]*\])*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def _prose(text: str) -> list[str]:
    """The lines outside fenced code blocks, with HTML comments and inline code blanked out."""
    text = re.sub(
        r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), text, flags=re.S
    )  # keep line numbers
    lines, fenced = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        lines.append("" if fenced else re.sub(r"`[^`]*`", "", line))
    return lines


def _slug(heading: str) -> str:
    heading = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    found: set[str] = set()
    counts: dict[str, int] = {}
    text = re.sub(r"<!--.*?-->", "", page.read_text(encoding="utf-8"), flags=re.S)
    fenced = False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            slug = _slug(match.group(1))
            n = counts.get(slug, 0)
            counts[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def links(page: Path) -> list[tuple[int, str]]:
    return [
        (number, m.group(1))
        for number, line in enumerate(_prose(page.read_text(encoding="utf-8")), 1)
        for m in LINK.finditer(line)
    ]


def test_the_slugs_follow_github():
    assert _slug("Neural style transfer (stylegan-stylize)") == "neural-style-transfer-stylegan-stylize"
    assert _slug("Tiled translation (export / translate)") == "tiled-translation-export--translate"
    assert _slug("Demo training (`python train.py`)") == "demo-training-python-trainpy"
    assert _slug("Weights (never random)") == "weights-never-random"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_a_heading(page):
    broken = []
    for number, target in links(page):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto: … are not checked offline
            continue
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(REPO)}:{number}: {target}"
        if not resolved.exists():
            broken.append(f"{where} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{where} (no heading with this anchor)")
    assert not broken, "broken links:\n" + "\n".join(broken)


def test_the_link_check_sees_links_and_skips_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "# Title\n[a](other.md#x) ![b](images/p.png)\n`[c](not-a-link.md)`\n```\n[d](nor-this.md)\n```\n"
        "<!-- [e](nor-this-one.md) -->\n",
        encoding="utf-8",
    )
    assert [t for _, t in links(page)] == ["other.md#x", "images/p.png"]
    assert anchors(page) == {"title"}


def test_the_readme_fits_on_one_screen():
    size = len(README.read_bytes())
    assert size < README_LIMIT, (
        f"README.md is {size} bytes; move detail into docs/*.md (limit {README_LIMIT})"
    )


def test_every_docs_page_is_one_click_from_the_readme():
    linked = {(README.parent / t.partition("#")[0]).resolve() for _, t in links(README)}
    missing = [p.name for p in DOCS.glob("*.md") if p.resolve() not in linked]
    assert not missing, f"docs pages the README does not link to: {missing}"


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, flags=re.S | re.M)
    assert match, f"README.md has no '## {heading}' section"
    return match.group(1)


def test_the_readme_package_map_lists_exactly_the_tree():
    listed = re.findall(
        r"^- `([\w]+/?)`", _section(README.read_text(encoding="utf-8"), "Package map"), flags=re.M
    )
    tree = {p.parent.name + "/" for p in PACKAGE.glob("*/__init__.py")}
    tree |= {p.stem for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert len(listed) == len(set(listed)), (
        f"listed twice: {sorted(n for n in listed if listed.count(n) > 1)}"
    )
    assert set(listed) == tree, (
        f"README 'Package map' is out of date: missing {sorted(tree - set(listed))}, "
        f"gone from the tree {sorted(set(listed) - tree)}"
    )


def test_the_module_table_of_the_development_guide_lists_every_module():
    listed = re.findall(
        r"^\| `([\w/]+\.py)` \|", (DOCS / "development.md").read_text(encoding="utf-8"), flags=re.M
    )
    tree = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    assert set(listed) == tree, (
        f"docs/development.md module table is out of date: missing {sorted(tree - set(listed))}, "
        f"gone from the tree {sorted(set(listed) - tree)}"
    )


def test_the_readme_keeps_the_test_command_ci_runs():
    readme = README.read_text(encoding="utf-8")
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    command = "python -m pytest -q"
    assert re.search(rf"^python -m venv .*&& {re.escape(command)}$", readme, flags=re.M)
    assert ci.rstrip().splitlines()[-1] == command
