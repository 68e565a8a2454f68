"""BENCHMARKS.md and its dated pages (docs/experiments/): links resolve, the contents list every
section, and every section opens with the command that produced its result."""

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "BENCHMARKS.md"
EXPERIMENTS = sorted((ROOT / "docs" / "experiments").glob("*.md"))
LINK = re.compile(r"\]\(([^)\s]+)\)")

#: sections whose result has no single committed command (a unit test's bandit, varied by hand)
NO_COMMAND = {"The critic's action sensitivity (two-context bandit)"}


def anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def sections(text: str) -> dict[str, str]:
    parts = re.split(r"^## (.+)$", text, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("page", [BENCHMARKS, *EXPERIMENTS], ids=lambda p: p.name)
def test_relative_links_resolve(page):
    text = page.read_text()
    targets = [m.group(1) for m in LINK.finditer(text)]
    files = [t.split("#")[0] for t in targets if not t.startswith(("http://", "https://", "#"))]
    missing = [t for t in files if t and not (page.parent / t).exists()]
    assert not missing, f"{page.name}: {missing}"
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", text, flags=re.M)}
    dangling = [t for t in targets if t.startswith("#") and t[1:] not in anchors]
    assert not dangling, f"{page.name}: {dangling}"


def test_contents_list_every_section_in_order():
    text = BENCHMARKS.read_text()
    listed = re.findall(r"^- \[[^\]]+\]\(#([^)]+)\)$", text, flags=re.M)
    assert listed == [anchor(h) for h in sections(text)]


def test_every_section_opens_with_its_command():
    for heading, body in sections(BENCHMARKS.read_text()).items():
        if heading in NO_COMMAND:
            continue
        first = body.strip().split("\n", 1)[0]
        assert first.startswith("```"), f"'{heading}' opens with {first!r}, not its command"


@pytest.mark.parametrize("page", EXPERIMENTS, ids=lambda p: p.name)
def test_experiment_pages_are_dated(page):
    date = re.match(r"(\d{4}-\d{2}-\d{2})-[a-z0-9-]+\.md$", page.name)
    assert date, page.name
    assert page.read_text().startswith(f"# {date.group(1)}: ")
