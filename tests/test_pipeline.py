from __future__ import annotations

import pytest

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


def test_the_vgg_steps_run_beside_the_others_only_where_that_helps(monkeypatch):
    from salbench.stages import overlap

    emb = steps("embedded", None)
    background = [s for s in emb if s.background]
    assert [(s.command, s.argv) for s in background] == [
        ("train", ("--models", "embedded_vgg")),
        ("diagnostics", ("--model", "embedded_vgg")),
    ]
    assert not any(s.background for s in steps("imagenet", None))
    monkeypatch.setattr(overlap.torch, "get_num_threads", lambda: 2)
    assert overlap.Background.wanted(emb, "cpu", 0, 1)
    assert not overlap.Background.wanted(emb, "cuda", 0, 1)  # a GPU: one after the other
    assert not overlap.Background.wanted(emb, "cpu", 2, 1)  # --threads given: respected
    assert not overlap.Background.wanted(emb, "cpu", 0, 2)  # torchrun
    assert not overlap.Background.wanted(steps("imagenet", None), "cpu", 0, 1)
    monkeypatch.setattr(overlap.torch, "get_num_threads", lambda: 1)
    assert not overlap.Background.wanted(emb, "cpu", 0, 1)


CHILD = """
import sys, ast, torch
steps = ast.literal_eval(sys.argv[1])
print("threads", torch.get_num_threads(), "steps", [s[0] for s in steps], "argv", steps[0][1:])
print("progress", file=sys.stderr)
sys.exit(int(steps[0][-1]) if steps[0][-1].isdigit() else 0)
"""


@pytest.mark.parametrize("rc", [0, 3])
def test_background_steps_run_in_a_one_thread_child_and_give_threads_back(tmp_path, monkeypatch, capsys, rc):
    import torch

    from salbench.stages import overlap
    from salbench.stages.pipeline import Step

    monkeypatch.setattr(overlap, "_CHILD", CHILD)
    before = torch.get_num_threads()
    side = overlap.Background(
        [Step("0/5 a", "train", argv=("--x", str(rc)), background=True), Step("0/5 b", "diagnostics")],
        ["--limit", "2"],
        tmp_path / "logs",
    )
    side.start()
    assert side.wait() == rc and side.poll()
    assert torch.get_num_threads() == before
    out = capsys.readouterr().out
    assert "threads 1 steps ['train', 'diagnostics'] argv ['--limit', '2', '--x', " in out
    assert (tmp_path / "logs" / "background.log").read_text() == "progress\n"
    assert ("FAILED" in out and f"exit code {rc}" in out) == (rc != 0)
    assert side.describe() == "salbench train --x " + str(rc) + "; salbench diagnostics"
