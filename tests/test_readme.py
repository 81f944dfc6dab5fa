"""Every Python snippet of the README runs, in order, as a reader would paste it."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)  # snippets may write files (metric.dump)
    namespace: dict = {}
    for i, code in enumerate(blocks):
        exec(compile(code, f"README.md python block {i + 1}", "exec"), namespace)
    assert (tmp_path / "insertion.yaml").is_file()
    assert namespace["scores"]["insertion"].shape == (4,)
    assert namespace["result"]["n_images"] >= 1
