"""The Python snippets of docs/migration-tools.md are copies of files the suite
runs: each code block after a `<!-- from PATH -->` line must appear in PATH as it
is, so that the documentation cannot drift from what is tested."""

import re

import pytest

from conftest import HERE

ROOT = HERE.parents[2]
DOC = ROOT / "docs" / "migration-tools.md"
SNIPPETS = re.findall(r"<!-- from (\S+) -->\n```python\n(.*?)```", DOC.read_text(), re.S)


def test_the_page_has_its_snippets():
    assert len(SNIPPETS) == 4


@pytest.mark.parametrize("path, snippet", SNIPPETS, ids=[path for path, _ in SNIPPETS])
def test_snippet_is_a_copy_of_a_tested_file(path, snippet):
    assert snippet in (ROOT / path).read_text()
