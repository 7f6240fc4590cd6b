"""Tiny PyTorch models for compare tests: deterministic weights, two outputs.

Referenced as ``tests/data/tiny_torch.py:make_model`` (tuple outputs) and
``tests/data/tiny_torch.py:make_dict_model`` (dict outputs).
"""

from __future__ import annotations

import torch
from torch import nn


class TinyNet(nn.Module):
    """conv -> relu -> pool -> linear; returns (features, logits)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, kernel_size=3, padding=1)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feat = torch.relu(self.conv(x)).mean(dim=(2, 3))
        return feat, self.fc(feat)


class TinyDictNet(TinyNet):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # type: ignore[override]
        feat, logits = super().forward(x)
        return {"logits": logits, "feat": feat}


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyNet()


def make_dict_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyDictNet()
