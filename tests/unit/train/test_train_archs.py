"""The networks: output shapes, rebuilt from their JSON config, and the cnn's data check."""

from __future__ import annotations

import json

import pytest
import torch

from nubis.train.archs import (
    ConfigError,
    build_network,
    default_arch_config,
    quantize_linear_layers,
)


@pytest.mark.parametrize("arch", ["logreg", "mlp", "cnn"])
def test_networks_map_flat_rows_to_logits(arch: str) -> None:
    config = default_arch_config(arch, input_dim=64, input_shape=[1, 8, 8], num_classes=10)
    config = json.loads(json.dumps(config))  # what model.json keeps is enough to rebuild it
    network = build_network(arch, config).eval()
    assert network(torch.zeros(5, 64)).shape == (5, 10)
    assert network(torch.zeros(1, 64)).shape == (1, 10)


def test_same_seed_same_weights() -> None:
    config = default_arch_config("mlp", input_dim=4, input_shape=None, num_classes=3)
    torch.manual_seed(7)
    a = build_network("mlp", config).state_dict()
    torch.manual_seed(7)
    b = build_network("mlp", config).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("shape", [None, [1, 2, 2], [1, 8, 6]])
def test_cnn_needs_square_image_data(shape: list[int] | None) -> None:
    with pytest.raises(ConfigError, match="--model cnn needs square image data"):
        default_arch_config("cnn", input_dim=4, input_shape=shape, num_classes=3)


def test_quantization_replaces_linear_layers_only() -> None:
    config = default_arch_config("cnn", input_dim=64, input_shape=[1, 8, 8], num_classes=10)
    quantized = quantize_linear_layers(build_network("cnn", config))
    modules = list(quantized.modules())
    assert any(type(m) is torch.nn.Conv2d for m in modules)
    assert not any(type(m) is torch.nn.Linear for m in modules)
    assert sum(type(m).__module__.startswith("torch.ao.nn.quantized.dynamic") for m in modules) == 2
    assert quantized(torch.zeros(3, 64)).shape == (3, 10)
