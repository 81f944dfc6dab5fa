from __future__ import annotations

from salbench.stages.cli import load_commands
from salbench.stages.pipeline import _without_option, steps


def test_steps_cover_every_stage_with_registered_commands():
    emb = steps("embedded", None)
    commands = [s.command for s in emb]
    assert commands[0] == "train" and commands[-1] == "report"
    assert all(c in load_commands() for c in commands)
    assert {"methods": ["casme"]} in [s.options for s in emb]
    assert ("augment", {"step": "evaluate"}) in [(s.command, s.options) for s in emb]
    imagenet = steps("imagenet", None)
    assert "train" not in [s.command for s in imagenet]
    assert {"methods": ["casme"]} not in [s.options for s in imagenet]
    casme = [s for s in steps("imagenet", "m.pt") if s.options.get("methods") == ["casme"]]
    assert len(casme) == 1 and casme[0].argv == ("--masker", "m.pt")


def test_without_option():
    argv = ["--limit", "3", "--casme-checkpoint", "x.pt", "--seed", "1", "--casme-checkpoint=y"]
    assert _without_option(argv, "--casme-checkpoint") == ["--limit", "3", "--seed", "1"]
