from __future__ import annotations

import time

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


def test_independent_steps_run_beside_the_others_only_where_that_helps(monkeypatch):
    from salbench.stages import overlap

    emb = steps("embedded", None)
    background = [(s.command, s.argv, dict(s.options), s.after) for s in emb if s.background]
    assert background == [
        ("train", ("--models", "embedded_vgg"), {}, ""),
        ("diagnostics", ("--model", "embedded_vgg"), {}, ""),
        ("augment", (), {"step": "generate"}, "1/5 diagnostics"),
        ("augment", (), {"step": "evaluate"}, "1/5 diagnostics"),
    ]
    assert "1/5 diagnostics" in [s.title for s in emb if not s.background]
    assert [s.command for s in steps("imagenet", None) if s.background] == ["augment", "augment"]
    monkeypatch.setattr(overlap.torch, "get_num_threads", lambda: 2)
    assert overlap.Background.wanted(emb, "cpu", 0, 1)
    assert not overlap.Background.wanted(emb, "cuda", 0, 1)  # a GPU: one after the other
    assert not overlap.Background.wanted(emb, "cpu", 2, 1)  # --threads given: respected
    assert not overlap.Background.wanted(emb, "cpu", 0, 2)  # torchrun
    monkeypatch.setattr(overlap.torch, "get_num_threads", lambda: 1)
    assert not overlap.Background.wanted(emb, "cpu", 0, 1)


CHILD = """
import json, sys, torch
steps = json.loads(sys.argv[1])
print("threads", torch.get_num_threads(), "steps", [s[0] for s in steps], "argv", steps[0][1], steps[0][2])
print("progress", file=sys.stderr)
argv = steps[0][1]
sys.exit(int(argv[argv.index("--x") + 1]) if "--x" in argv else 0)
"""


@pytest.mark.parametrize("rc", [0, 3])
def test_background_groups_run_in_one_thread_children_after_their_step(tmp_path, monkeypatch, capsys, rc):
    import torch

    from salbench.stages import overlap
    from salbench.stages.pipeline import Step

    monkeypatch.setattr(overlap, "_CHILD", CHILD)
    before = torch.get_num_threads()
    first = Step("0/5 a", "train", argv=("--x", str(rc)), background=True)
    second = Step("4/5 b", "augment", {"step": "generate"}, background=True, after="1/5 diagnostics")
    side = overlap.Background([first, second], ["--limit", "2"], tmp_path / "logs")
    assert [(after, [s.title for s in g]) for after, g in side.groups()] == [
        ("", ["0/5 a"]),
        ("1/5 diagnostics", ["4/5 b"]),
    ]
    side.start()
    if rc == 0:
        time.sleep(1.0)  # the second group waits for its step
        assert "augment" not in (tmp_path / "logs" / "background.out").read_text()
        side.mark_done("1/5 diagnostics")
    assert side.wait() == rc and side.poll()
    assert torch.get_num_threads() == before
    out = capsys.readouterr().out
    assert f"threads 1 steps ['train'] argv ['--limit', '2', '--x', '{rc}'] {{}}" in out
    assert ("threads 1 steps ['augment'] argv ['--limit', '2'] {'step': 'generate'}" in out) == (rc == 0)
    assert ("FAILED" in out and f"exit code {rc}" in out) == (rc != 0)
    assert side.describe() == f"salbench train --x {rc}; salbench augment step=generate"


def test_a_cancelled_background_starts_no_further_group(tmp_path, monkeypatch):
    from salbench.stages import overlap
    from salbench.stages.pipeline import Step

    monkeypatch.setattr(overlap, "_CHILD", CHILD)
    waiting = Step("4/5 b", "augment", background=True, after="1/5 diagnostics")
    side = overlap.Background([waiting], [], tmp_path / "logs")
    side.start()
    side.cancel()
    assert side.wait() == 0
    assert (tmp_path / "logs" / "background.out").read_text() == ""
