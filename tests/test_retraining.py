"""ROAR re-training metric: exact removal, a synthetic problem with a known answer, resume, rows, script."""

from __future__ import annotations

import dataclasses
import os
import socket
import types

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from evaluation import retraining as script
from salbench.config import resolve_config
from salbench.errors import ConfigError, DataError
from salbench.metrics import retraining
from salbench.metrics.retraining import (
    BASELINE,
    MEAN_METRIC,
    METRIC,
    RoarSettings,
    n_removed,
    removal_mask,
    remove_pixels,
    roar_scores,
)
from salbench.models.embedded import EmbeddedResNet
from salbench.runtime import distributed
from salbench.stages.retraining import record_results, result_rows, run_retraining
from salbench.stages.workspace import open_workspace
from salbench.store.layout import RunLayout
from salbench.store.results import RESULT_COLUMNS, UNCERTAINTY_COLUMNS, read_results, upsert_results

MEAN, STD = (0.5, 0.25, 0.125), (0.5, 0.25, 2.0)


def test_n_removed_rounds_half_up():
    assert n_removed(10, 12544) == 1254  # 1254.4
    assert n_removed(50, 5) == 3  # 2.5 rounds up
    assert n_removed(30, 5) == 2  # 1.5 rounds up
    assert n_removed(90, 64) == 58  # 57.6
    assert n_removed(0, 64) == 0 and n_removed(100, 64) == 64


def test_removal_mask_exact_with_stable_ties():
    maps = torch.tensor([[[0.5, 0.9, 0.5], [0.1, 0.9, 0.5]], [[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]]])
    # 50% of 6 pixels = 3: both 0.9s, then the first 0.5 in raster order; constant map: raster order
    expected = torch.tensor([[[1, 1, 0], [0, 1, 0]], [[1, 1, 1], [0, 0, 0]]], dtype=torch.bool)
    assert torch.equal(removal_mask(maps, 50), expected)
    # 34% of 6 = 2.04 -> 2 pixels: ties between the two 0.9s broken by raster index
    expected = torch.tensor([[[0, 1, 0], [0, 1, 0]], [[1, 1, 0], [0, 0, 0]]], dtype=torch.bool)
    assert torch.equal(removal_mask(maps, 34), expected)


@pytest.mark.parametrize("fill", ["mean", "black"])
def test_remove_pixels_fill_values_exact(fill):
    images = torch.arange(2 * 3 * 2 * 3, dtype=torch.float32).view(2, 3, 2, 3) / 10
    maps = torch.tensor([[[0.5, 0.9, 0.5], [0.1, 0.9, 0.5]], [[0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    before = images.clone()
    out = remove_pixels(images, maps, 50, fill, MEAN, STD)
    assert torch.equal(images, before)  # input untouched
    removed = torch.tensor([[[1, 1, 0], [0, 1, 0]], [[1, 1, 1], [0, 0, 0]]], dtype=torch.bool)
    value = [0.0, 0.0, 0.0] if fill == "mean" else [-1.0, -1.0, -0.0625]  # -mean / std
    for c in range(3):
        expected = torch.where(removed, torch.tensor(value[c]), images[:, c])
        assert torch.equal(out[:, c], expected)


def test_k0_leaves_images_unchanged_and_copies():
    images = torch.randn(3, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    out = remove_pixels(images, torch.rand(3, 4, 4), 0, "black", MEAN, STD)
    assert torch.equal(out, images) and out.data_ptr() != images.data_ptr()


def test_batched_removal_matches_numpy_reference_across_chunks():
    g = torch.Generator().manual_seed(1)
    n = retraining._CHUNK + 37
    images = torch.randn(n, 3, 5, 6, generator=g)
    maps = torch.randint(0, 4, (n, 5, 6), generator=g).float()  # many ties
    out = remove_pixels(images, maps, 30, "mean", MEAN, STD)
    flat = maps.view(n, -1).numpy()
    order = np.argsort(-flat, axis=1, kind="stable")[:, : n_removed(30, 30)]
    expected = images.clone().view(n, 3, -1)
    for i in range(n):
        expected[i, :, order[i]] = 0.0
    assert torch.equal(out, expected.view_as(images))


def test_remove_pixels_rejects_bad_maps():
    with pytest.raises(DataError, match="do not fit"):
        remove_pixels(torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 5), 10, "mean", MEAN, STD)
    with pytest.raises(DataError, match="non-finite"):
        remove_pixels(
            torch.zeros(1, 3, 2, 2), torch.tensor([[[0.0, float("nan")], [1, 2]]]), 10, "mean", MEAN, STD
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ks": (0, 50)}, "--k must be integers in 1..99"),
        ({"ks": (100,)}, "--k must be integers in 1..99"),
        ({"ks": (10, 10)}, "--k values must be distinct"),
        ({"fill": "blur"}, "--fill 'blur' is not one of mean, black"),
        ({"ks": (True,)}, "--k must be integers in 1..99"),
        ({"ks": (10.0,)}, "--k must be integers in 1..99"),
        ({"epochs": 0}, "--epochs must be >= 1, got 0"),
        ({"lr": 0.0}, "train.lr > 0"),
    ],
)
def test_settings_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        RoarSettings(**kwargs)


def test_settings_from_train_recipe_and_integer_ks():
    cfg = resolve_config(None, {"train": {"epochs": 7, "lr": 0.01, "seed": 3}})
    s = RoarSettings.from_train(cfg.train, ks=[np.int64(10), 90], fill="black")
    assert s.ks == (10, 90) and all(type(k) is int for k in s.ks)
    assert (s.epochs, s.lr, s.seed, s.batch_size, s.weight_decay, s.fill) == (7, 0.01, 3, 64, 0.05, "black")
    assert s.train_config() == dataclasses.replace(cfg.train)


def _synthetic(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """8x8 images whose class is the sign of rows 0-1 (+1 / -1); the rest is one fixed pattern."""
    background = torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(99))
    labels = torch.arange(n) % 2
    labels = labels[torch.randperm(n, generator=torch.Generator().manual_seed(seed))]
    images = background.repeat(n, 1, 1, 1)
    images[:, :, :2, :] = (2.0 * labels - 1.0).view(n, 1, 1, 1)
    return images, labels


def _linear() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))


SYNTHETIC = RoarSettings(ks=(25,), epochs=6, batch_size=16, lr=0.05, weight_decay=0.0)


def _rows_map(n: int, rows: slice) -> torch.Tensor:
    maps = torch.zeros(n, 8, 8)
    maps[:, rows, :] = 1.0
    return maps


def _synthetic_scores(rows: slice, settings: RoarSettings = SYNTHETIC) -> dict[int, float]:
    """ROAR on the synthetic problem (64 train, 20 test images) with maps equal to 1 on ``rows``."""
    (xtr, ytr), (xte, yte) = _synthetic(64, 0), _synthetic(20, 1)
    train_maps, test_maps = _rows_map(64, rows), _rows_map(20, rows)
    args = (xtr, ytr, train_maps, xte, yte, test_maps, _linear, settings)
    return roar_scores(*args, mean=MEAN, std=STD)


def test_roar_scores_on_a_problem_with_known_evidence():
    # 25% of 64 pixels = the 16 pixels of rows 0-1: the map pointing at them removes all the evidence,
    # every modified image is the same, so every prediction is the same: exactly chance on balanced data
    assert _synthetic_scores(slice(0, 2)) == {0: 1.0, 25: 0.5}
    # a map pointing elsewhere removes as many pixels and leaves the evidence: still perfect
    assert _synthetic_scores(slice(6, 8)) == {0: 1.0, 25: 1.0}
    black = dataclasses.replace(SYNTHETIC, fill="black", baseline=False)
    assert _synthetic_scores(slice(0, 2), black) == {25: 0.5}


def test_retraining_is_deterministic_and_restores_the_global_rng():
    (xtr, ytr), (xte, yte) = _synthetic(32, 0), _synthetic(10, 1)
    noisy = xtr + 3.0 * torch.randn(xtr.shape, generator=torch.Generator().manual_seed(5))
    settings = dataclasses.replace(SYNTHETIC, epochs=2)
    state = torch.random.get_rng_state()
    a = retraining.retrained_accuracy(_linear, (noisy, ytr), (xte, yte), settings)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert retraining.retrained_accuracy(_linear, (noisy, ytr), (xte, yte), settings) == a


def test_result_rows_schema_and_values():
    cfg = resolve_config(None, {"run": {"protocol": "reference"}})
    ws = types.SimpleNamespace(cfg=cfg, data=types.SimpleNamespace(name="embedded"), augmentation="none")
    scores = pd.DataFrame(
        {
            "method": [BASELINE, "gradcam", "gradcam", "random", "random"],
            "k": [0, 10, 90, 10, 90],
            "accuracy": [0.8, 0.6, 0.2, 0.7, 0.4],
        }
    )
    families = {"gradcam": "CAM", "random": "Control"}
    rows = pd.DataFrame(result_rows(ws, scores, 300, families))[RESULT_COLUMNS]
    assert rows[list(UNCERTAINTY_COLUMNS)].isna().all().all()  # accuracies of re-trained models
    rows = rows.drop(columns=list(UNCERTAINTY_COLUMNS))
    base = ["embedded_resnet", "embedded", "groundtruth"]
    expected = pd.DataFrame(
        [
            [
                *base,
                BASELINE,
                "Reference",
                "none",
                "k00",
                0,
                METRIC,
                0.8,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "gradcam",
                "CAM",
                "none",
                "k10",
                0,
                METRIC,
                0.6,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "gradcam",
                "CAM",
                "none",
                "k90",
                0,
                METRIC,
                0.2,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "random",
                "Control",
                "none",
                "k10",
                0,
                METRIC,
                0.7,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "random",
                "Control",
                "none",
                "k90",
                0,
                METRIC,
                0.4,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "gradcam",
                "CAM",
                "none",
                "none",
                0,
                MEAN_METRIC,
                0.4,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
            [
                *base,
                "random",
                "Control",
                "none",
                "none",
                0,
                MEAN_METRIC,
                0.55,
                300,
                0,
                False,
                "reference",
                "unknown",
                "unknown",
                "fp32",
            ],
        ],
        columns=[c for c in RESULT_COLUMNS if c not in UNCERTAINTY_COLUMNS],
    )
    pd.testing.assert_frame_equal(rows, expected, check_exact=False, rtol=1e-12)


def test_record_results_replaces_the_whole_roar_block(tmp_path):
    cfg = resolve_config(None, {"run": {"output_root": str(tmp_path)}})
    data, layout = types.SimpleNamespace(name="embedded"), RunLayout.from_config(cfg)
    ws = types.SimpleNamespace(cfg=cfg, data=data, augmentation="none", layout=layout)
    old = pd.DataFrame(
        {"method": ["gradcam", "random", BASELINE], "k": [30, 30, 0], "accuracy": [0.1, 0.2, 0.3]}
    )
    rows = result_rows(ws, old, 300)
    other = {**rows[0], "metric": "insertion", "variant": "none", "value": 0.42, "higher_is_better": True}
    other_protocol = {**rows[1], "protocol": "reference"}
    upsert_results(layout.results_csv, [*rows, other, other_protocol])
    new = pd.DataFrame({"method": [BASELINE, "random"], "k": [0, 50], "accuracy": [0.9, 0.5]})
    record_results(ws, result_rows(ws, new, 300))
    table = read_results(layout.results_csv)
    got = set(zip(table.method, table.variant, table.metric, table.value, table.protocol))
    assert got == {
        (BASELINE, "k00", METRIC, 0.9, "acml2024"),
        ("random", "k50", METRIC, 0.5, "acml2024"),
        ("random", "none", MEAN_METRIC, 0.5, "acml2024"),
        ("gradcam", "none", "insertion", 0.42, "acml2024"),  # not a ROAR row: kept
        ("random", "k30", METRIC, 0.2, "reference"),  # another protocol: kept
    }
    assert len(table) == 5


@pytest.fixture(scope="module")
def tiny_embedded(tmp_path_factory):
    """A tiny embedded benchmark (48 px; 24 train, 8 eval images) and an untrained checkpoint."""
    tmp = tmp_path_factory.mktemp("roar")
    ckpt = tmp / "model.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": EmbeddedResNet(num_classes=10).state_dict(), "meta": {"num_classes": 10}}, ckpt)
    cfg = tmp / "c.yaml"
    cfg.write_text(
        f"run: {{output_root: {tmp / 'out'}, batch_size: 8, limit: 4}}\n"
        f"data: {{kind: embedded, root: {tmp / 'bench'}, "
        "embedded: {image_size: 48, n_train: 24, n_val: 4, n_eval: 8}}\n"
        f"model: {{name: embedded_resnet, checkpoint: {ckpt}}}\ntrain: {{batch_size: 8, epochs: 1}}\n"
    )
    return cfg, tmp / "out"


def _count_trainings(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = retraining.train_classifier

    def counting(model, train, *args, **kwargs):
        calls.append(len(train[1]))
        return real(model, train, *args, **kwargs)

    monkeypatch.setattr(retraining, "train_classifier", counting)
    return calls


def test_run_resumes_without_retraining(tiny_embedded, monkeypatch, tmp_path):
    cfg_path, _ = tiny_embedded
    cfg = resolve_config(cfg_path, {"run": {"output_root": str(tmp_path / "run"), "limit": 0}})
    ws = open_workspace(cfg)
    settings = RoarSettings.from_train(cfg.train, ks=(20, 60))
    calls = _count_trainings(monkeypatch)
    first = run_retraining(ws, settings, ["gradient"], n_train=16, progress=False)
    assert calls == [16] * 5  # original + (gradient, random) x 2 ks
    assert first["method"].tolist() == [
        BASELINE,
        "gradient_smoothgrad",
        "gradient_smoothgrad",
        "random",
        "random",
    ]
    assert first["k"].tolist() == [0, 20, 60, 20, 60] and first["accuracy"].between(0, 1).all()
    folder = ws.layout.model_dir / "retraining"
    maps = sorted((folder / "maps").glob("*.npy"))
    assert len(maps) == 4 and np.load(maps[0]).dtype == np.float32
    assert {np.load(p).shape for p in maps} == {(16, 48, 48), (8, 48, 48)}
    mtimes = [p.stat().st_mtime_ns for p in maps]
    # rerun: nothing retrained, maps not regenerated, the same scores
    second = run_retraining(ws, settings, ["gradient"], n_train=16, progress=False)
    assert calls == [16] * 5 and [p.stat().st_mtime_ns for p in maps] == mtimes
    pd.testing.assert_frame_equal(first, second)
    # an interrupted run (one accuracy missing) recomputes exactly that one, with the same value
    book = pd.read_csv(folder / "scores.csv")
    pd.concat([book.iloc[:2], book.iloc[3:]]).to_csv(folder / "scores.csv", index=False)
    third = run_retraining(ws, settings, ["gradient"], n_train=16, progress=False)
    assert len(calls) == 6 and [p.stat().st_mtime_ns for p in maps] == mtimes
    pd.testing.assert_frame_equal(first, third)
    # another recipe is a different key: retrained
    run_retraining(ws, dataclasses.replace(settings, ks=(20,), fill="black"), ["gradient"], 16, False)
    assert len(calls) == 6 + 3


def test_script_end_to_end(tiny_embedded, capsys):
    cfg, root = tiny_embedded
    argv = ["--config", str(cfg), "--quick", "--method", "gradcam", "--k", "50", "--epochs", "1"]
    assert script.main(argv) == 0
    out = capsys.readouterr().out
    assert "ROAR test accuracy (2 methods, 1 process(es), fill mean)" in out
    folder = root / "embedded_resnet" / "retraining"
    assert (folder / "roar.png").stat().st_size > 10_000
    assert (folder / "config.yaml").is_file() and (folder / "manifest.json").is_file()
    results = pd.read_csv(root / "results.csv")
    assert list(results.columns) == RESULT_COLUMNS
    roar = results[results.metric.isin([METRIC, MEAN_METRIC])].set_index(["method", "variant", "metric"])
    accuracy_rows = [(BASELINE, "k00", METRIC), ("gradcam", "k50", METRIC), ("random", "k50", METRIC)]
    mean_rows = [("gradcam", "none", MEAN_METRIC), ("random", "none", MEAN_METRIC)]
    assert sorted(roar.index) == sorted([*accuracy_rows, *mean_rows])
    assert (roar.n_images == 8).all() and (roar.label_set == "groundtruth").all()  # all eval images
    assert (roar.higher_is_better.astype(str) == "False").all() and (roar.protocol == "acml2024").all()
    scores = pd.read_csv(folder / "scores.csv").set_index(["method", "k"])
    assert roar.loc[("gradcam", "k50", METRIC), "value"] == scores.loc[("gradcam", 50), "accuracy"]
    assert roar.loc[("gradcam", "none", MEAN_METRIC), "value"] == scores.loc[("gradcam", 50), "accuracy"]
    assert scores.loc[(BASELINE, 0), "n_train"] == 24 and scores.loc[(BASELINE, 0), "epochs"] == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--k", "0"], "error: --k must be integers in 1..99"),
        (["--k", "10", "100"], "error: --k must be integers in 1..99"),
        (["--fill", "blur"], "error: --fill 'blur' is not one of mean, black"),
        (["--train-images", "-1"], "error: --train-images must be >= 0"),
        (["--data-kind", "imagenet"], "error: ROAR re-trains the classifier on a training split"),
    ],
)
def test_bad_arguments_one_line_exit_2(tiny_embedded, capsys, extra, message):
    cfg, _ = tiny_embedded
    assert script.main(["--config", str(cfg), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    env = {
        "RANK": rank,
        "LOCAL_RANK": rank,
        "WORLD_SIZE": world,
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": port,
    }
    os.environ.update({k: str(v) for k, v in env.items()})
    torch.set_num_threads(1)
    seen, real = [], retraining.train_classifier

    def recording(model, train, *args, **kwargs):
        history = real(model, train, *args, **kwargs)
        params = torch.cat([p.detach().flatten() for p in model.module.parameters()])
        seen.append({"wrapped": type(model).__name__, "n": len(train[1]), "params": params})
        return history

    retraining.train_classifier = recording
    with distributed("cpu") as (r, w):
        assert (r, w) == (rank, world)
        on = _synthetic_scores(slice(0, 2))
    torch.save({"on": on, "seen": seen}, f"{out}/rank{rank}.pt")


@pytest.mark.slow
def test_two_process_gloo_training(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["on"] == ranks[1]["on"] == {0: 1.0, 25: 0.5}
    for a, b in zip(ranks[0]["seen"], ranks[1]["seen"]):
        # each rank trains DDP on its half of the 64 images; gradients are all-reduced: same weights
        assert a["wrapped"] == b["wrapped"] == "DistributedDataParallel" and a["n"] == b["n"] == 32
        assert torch.equal(a["params"], b["params"])
