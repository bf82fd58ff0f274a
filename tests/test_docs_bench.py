"""docs/: benchmark output lives under docs/bench/, and the docs' relative links resolve."""

import pathlib
import re

DOCS = pathlib.Path(__file__).parents[1] / "docs"


def test_bench_output_is_under_docs_bench():
    stray = sorted(p.name for p in DOCS.iterdir() if p.is_file() and p.suffix in (".jsonl", ".json"))
    assert not stray, f"move benchmark output to docs/bench/: {stray}"
    assert any((DOCS / "bench").glob("*.jsonl"))


def test_relative_links_resolve():
    broken = []
    for md in sorted([*DOCS.glob("*.md"), DOCS.parent / "README.md"]):
        for target in re.findall(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", md.read_text()):
            if not re.match(r"[a-z]+:", target) and not (md.parent / target).exists():
                broken.append(f"{md.name}: {target}")
    assert not broken, broken
