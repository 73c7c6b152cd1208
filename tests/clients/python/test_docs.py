"""The snippets of docs/migration-tools.md are copies of files the suites run:
each code block after a `<!-- from PATH -->` line must appear in PATH as it is
(indented or not), so that the documentation cannot drift from what is tested.
The only other blocks allowed are those marked `<!-- untested: REASON -->`."""

import re

import pytest

from conftest import HERE

ROOT = HERE.parents[2]
DOC = ROOT / "docs" / "migration-tools.md"
TEXT = DOC.read_text()
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
SNIPPETS = re.findall(r"<!-- from (\S+) -->\n```\w+\n(.*?)^```$", TEXT, re.S | re.M)


def test_every_block_is_tested_or_says_why_not():
    for m in BLOCK.finditer(TEXT):
        before = TEXT[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        assert re.fullmatch(r"<!-- (from \S+|untested: .+) -->", before), f"unmarked block:\n{m.group(0)}"
    # Django, Alembic, SQLAlchemy, Prisma (2), Flyway, sqitch (3), and the retry
    # loops: Python, node-postgres, Prisma, Rust.
    assert len(SNIPPETS) == 13


def indented(snippet, prefix):
    return "".join(prefix + line if line.strip() else line for line in snippet.splitlines(keepends=True))


@pytest.mark.parametrize("path, snippet", SNIPPETS, ids=[path for path, _ in SNIPPETS])
def test_snippet_is_a_copy_of_a_tested_file(path, snippet):
    source = (ROOT / path).read_text()
    # A snippet may be shown without the indentation it has in its file.
    prefixes = {""} | set(re.findall(r"^([ \t]+)\S", source, re.M))
    assert any(indented(snippet, p) in source for p in prefixes), f"{path} does not contain:\n{snippet}"
