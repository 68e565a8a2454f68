"""README.md as a front door: short, its links resolve, its `pac` commands parse.

The references are the file system (a link names a file that exists) and `pac`'s own parser
(a command line the README shows is one `pac` accepts); the launcher lines are covered by
tests/test_cli.py.
"""

import re
import shlex
from pathlib import Path

import pytest

from pac.cli import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_readme_is_at_most_1500_words():
    assert len(README.read_text().split()) <= 1500


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page):
    targets = [m.group(1).split("#")[0] for m in LINK.finditer(page.read_text())]
    local = [t for t in targets if t and not t.startswith(("http://", "https://", "mailto:"))]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name}: {missing}"


def readme_pac_commands() -> list[list[str]]:
    """The `pac ...` lines of the README's code blocks, shell variables set as the README sets
    them (`R=...`), comments dropped."""
    text = README.read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, re.S)
    env: dict[str, str] = {}
    out = []
    for line in "\n".join(blocks).splitlines():
        line = line.split("#", 1)[0].strip()
        if m := re.fullmatch(r"(\w+)=(\S+)", line):
            env[m.group(1)] = m.group(2)
        elif line.startswith("pac "):
            out.append([re.sub(r"\$(\w+)", lambda v: env[v.group(1)], w)
                        for w in shlex.split(line)[1:]])
    return out


def test_readme_pac_commands_parse():
    commands = readme_pac_commands()
    assert {c[0] for c in commands} >= {"figures", "eval", "review", "config", "ingest"}
    parser = build_parser()
    for argv in commands:
        args = parser.parse_args(argv)  # SystemExit (argparse) on an unknown option
        assert args.command == argv[0]
