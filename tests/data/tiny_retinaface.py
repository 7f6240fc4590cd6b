"""A randomly initialised RetinaFace in the Pytorch_Retinaface output layout, for ``trtkit export`` tests.

Three feature levels at strides 8/16/32, 2 priors per cell, heads permuted to ``[B, H*W*2, k]`` and
concatenated like ``models/retinaface.py`` (ClassHead/BboxHead/LandmarkHead), ``conf`` softmaxed as in
the exported ``phase='test'`` model. Weights are random (seed 0): no trained RetinaFace is reachable here.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyRetinaFace(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.down = nn.ModuleList([nn.Conv2d(8, 8, 3, stride=4, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1),
                                   nn.Conv2d(8, 8, 3, stride=2, padding=1)])
        self.bbox = nn.ModuleList([nn.Conv2d(8, 2 * 4, 1) for _ in range(3)])
        self.cls = nn.ModuleList([nn.Conv2d(8, 2 * 2, 1) for _ in range(3)])
        self.ldm = nn.ModuleList([nn.Conv2d(8, 2 * 10, 1) for _ in range(3)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f = torch.relu(self.stem(x))
        feats = []
        for down in self.down:
            f = torch.relu(down(f))
            feats.append(f)
        def head(convs: nn.ModuleList, k: int) -> torch.Tensor:
            return torch.cat([c(f).permute(0, 2, 3, 1).reshape(f.shape[0], -1, k) for c, f in zip(convs, feats)], 1)
        loc, conf, landms = head(self.bbox, 4), head(self.cls, 2), head(self.ldm, 10)
        return loc, torch.softmax(conf, dim=-1), landms


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return TinyRetinaFace().eval()
