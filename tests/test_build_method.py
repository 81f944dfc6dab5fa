"""The library builds what the command line builds: ``build_method(method_id, model, protocol=...)`` gives the
maps of the stages' workspace under every protocol (issue: a bare ``build_params`` ran gradients in eval
mode where the CLI's acml2024 default trains)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from salbench.config import resolve_config
from salbench.errors import ConfigError
from salbench.methods import METHODS, build_method, build_params, method_values
from salbench.stages.workspace import open_workspace
from tests.conftest import write_stage_config


@pytest.fixture(scope="module")
def stage_config(tmp_path_factory):
    from tests.conftest import make_imagenet

    tmp = tmp_path_factory.mktemp("parity")
    return write_stage_config(
        tmp, make_imagenet(tmp), "groundtruth", "methods: {integrated_gradients: {n_steps: 6}}\n"
    )


@pytest.mark.parametrize("protocol", ["acml2024", "reference"])
@pytest.mark.parametrize("method_id", ["gradient", "integrated_gradients"])
def test_library_and_workspace_give_identical_maps(stage_config, protocol, method_id):
    ws = open_workspace(resolve_config(stage_config, {"run": {"protocol": protocol}}))
    images = ws.images.load(np.arange(4)).to(ws.runtime.device)
    targets = torch.tensor([3, 1, 7, 999])
    cli = ws.method(method_id)
    library = build_method(
        method_id,
        ws.model,
        protocol=protocol,
        config=stage_config,
        target_layer=ws.target_layer,
        mean=ws.context.mean,
        std=ws.context.std,
    )
    assert library.params == cli.params and library.store_id == cli.store_id
    assert library.context == cli.context  # num_classes read off the model: 1000
    assert library.params.train_mode is (protocol == "acml2024")
    expected = cli(images, targets, ws.generator(cli.store_id, 0))
    torch.testing.assert_close(
        library(images, targets, ws.generator(cli.store_id, 0)), expected, rtol=0, atol=0
    )
    if protocol == "acml2024":  # what the library gave before: the dataclass defaults, eval mode
        cls = METHODS.get(method_id)
        bare = cls(
            ws.model,
            ws.context,
            build_params(cls.params_cls, {"n_steps": 6} if "int" in method_id else {}, method_id),
        )
        assert float((bare(images, targets) - expected).abs().max()) > 0.1


def test_method_values_follow_the_command_line_precedence(tmp_path):
    assert method_values("gradient") == resolve_config(None).method_params("gradient")
    assert method_values("gradient", "reference")["train_mode"] is False
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run: {protocol: reference}\nmethods: {rise: {n_masks: 10}}\n")
    assert method_values("rise", config=cfg) == {"n_masks": 10, "grid_size": 7, "p1": 0.5, "score": "probs"}
    assert method_values("rise", "acml2024", cfg)["grid_size"] == 4  # the flag wins over the file
    resolved = resolve_config(cfg)
    assert method_values("rise", config=resolved)["n_masks"] == 10
    with pytest.raises(ConfigError, match=r"differs from the config's run\.protocol 'reference'"):
        method_values("rise", "acml2024", resolved)
    with pytest.raises(ConfigError, match="'paper' is not one of acml2024, reference"):
        method_values("rise", "paper")
    with pytest.raises(ConfigError, match="nope"):
        build_method("gradient", torch.nn.Linear(2, 2), nope=1)
