"""The networks the trainer builds: ``logreg``, ``mlp`` and ``cnn``, rebuilt from a JSON config.

Every network takes standardised flat rows ``(n, input_dim)`` and returns logits; the cnn reshapes
them to its ``input_shape`` itself, so training, serving and ONNX all feed the same rows.
This module imports torch: import it only where torch is needed (never from the ONNX serving path).
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import nn
from torch.ao.quantization import quantize_dynamic

from nubis.errors import BadRequestError

ARCHS = ("logreg", "mlp", "cnn")
DEFAULT_LR = {"logreg": 0.01, "mlp": 0.002, "cnn": 0.002}
MIN_IMAGE_SIDE = 4


class ConfigError(BadRequestError):
    """The data does not fit the architecture (e.g. a cnn on rows that are not images)."""


class ImageNet(nn.Module):
    """Two 3x3 convolutions, a 2x2 max-pool and a small classifier head: enough for 8x8 digits."""

    def __init__(
        self, *, input_shape: list[int], channels: list[int], hidden: int, dropout: float, num_classes: int
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        c, h, w = self.input_shape
        c1, c2 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(c1, c2, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(c2 * (h // 2) * (w // 2), hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x.reshape(-1, *self.input_shape)))


def default_arch_config(
    arch: str, *, input_dim: int, input_shape: list[int] | None, num_classes: int
) -> dict[str, Any]:
    """The JSON-able config that :func:`build_network` turns into a module."""
    if arch == "logreg":
        return {"input_dim": input_dim, "num_classes": num_classes}
    if arch == "mlp":
        return {"input_dim": input_dim, "hidden": [256, 256], "dropout": 0.2, "num_classes": num_classes}
    if arch == "cnn":
        if not is_square_image(input_shape):
            raise ConfigError(
                f"--model cnn needs square image data (e.g. builtin:digits, or an NPZ whose X is "
                f"(n, H, W) or (n, C, H, W) with H = W >= {MIN_IMAGE_SIDE}); this data is "
                f"{input_dim} flat features"
            )
        return {"input_shape": list(input_shape or ()), "channels": [32, 64], "hidden": 128,
                "dropout": 0.25, "num_classes": num_classes}
    raise ConfigError(f"unknown model {arch!r}; choose one of: {', '.join(ARCHS)}")


def is_square_image(shape: list[int] | tuple[int, ...] | None) -> bool:
    return shape is not None and len(shape) == 3 and shape[1] == shape[2] >= MIN_IMAGE_SIDE


def build_network(arch: str, config: dict[str, Any]) -> nn.Module:
    """A freshly initialised module for ``arch`` (seed torch first for the same weights)."""
    if arch == "logreg":
        return nn.Sequential(nn.Linear(config["input_dim"], config["num_classes"]))
    if arch == "mlp":
        layers: list[nn.Module] = []
        width = config["input_dim"]
        for hidden in config["hidden"]:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(config["dropout"])]
            width = hidden
        layers.append(nn.Linear(width, config["num_classes"]))
        return nn.Sequential(*layers)
    if arch == "cnn":
        return ImageNet(
            input_shape=config["input_shape"],
            channels=config["channels"],
            hidden=config["hidden"],
            dropout=config["dropout"],
            num_classes=config["num_classes"],
        )
    raise ConfigError(f"unknown model {arch!r}; choose one of: {', '.join(ARCHS)}")


def quantize_linear_layers(module: nn.Module) -> nn.Module:
    """Dynamic int8 quantization of every nn.Linear (weights int8, activations quantized per call)."""
    with warnings.catch_warnings():  # torch deprecates quantized tensors in favour of torchao
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return quantize_dynamic(module.eval(), {nn.Linear}, dtype=torch.qint8)
