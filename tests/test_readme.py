"""The README's code examples run, and its Quick start has exactly two commands."""

import pathlib
import re

README = (pathlib.Path(__file__).parents[1] / "README.md").read_text()


def test_python_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) >= 2
    for block in blocks:
        namespace = {}
        exec(compile(block, "README.md", "exec"), namespace)
        assert "model" in namespace or "variables" in namespace


def test_quick_start_has_two_commands():
    section = re.search(r"^## Quick start$(.*?)^## ", README, re.S | re.M).group(1)
    cmds = [l for b in re.findall(r"```bash\n(.*?)```", section, re.S) for l in b.splitlines() if l.strip()]
    assert len(cmds) == 2
    assert "experiments.main" in cmds[0] and "pytest" in cmds[1]
