from __future__ import annotations

from salbench.config import REPO_ROOT
from salbench.stages.pipeline import _without_option, steps


def test_steps_cover_every_stage_and_scripts_exist():
    emb = steps("embedded", None)
    scripts = [s for _, s, _ in emb]
    assert scripts[0] == "main/train_embedded.py" and scripts[-1] == "evaluation/report.py"
    assert "generation/casme.py" in scripts and "augmented/evaluate.py" in scripts
    assert all((REPO_ROOT / s).is_file() for s in scripts)
    imagenet = [s for _, s, _ in steps("imagenet", None)]
    assert "main/train_embedded.py" not in imagenet and "generation/casme.py" not in imagenet
    with_casme = steps("imagenet", "m.pt")
    assert ("2/5 maps: CASME", "generation/casme.py", ["--masker", "m.pt"]) in with_casme


def test_without_option():
    argv = ["--limit", "3", "--casme-checkpoint", "x.pt", "--seed", "1", "--casme-checkpoint=y"]
    assert _without_option(argv, "--casme-checkpoint") == ["--limit", "3", "--seed", "1"]
