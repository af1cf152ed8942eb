"""The U-Net that segments CCD frames into the classes of ``classes.py``.

Layout of the original Keras project: per level two 3×3 convolutions with ELU, max-pooling on
the way down, 2×2 transposed convolutions on the way up with the encoder's feature maps
concatenated, and a 1×1 head giving one logit map per class. No batch normalisation, as in the
original, so a model behaves the same on one tile as on a batch of them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from .classes import N_CLASSES
from .errors import InputError

DROPOUT_MODES = ("block", "bottleneck")
"""``block``: a Dropout2d after the first convolution of every block (the original's layout);
``bottleneck``: only in the deepest block, where most of a small net's parameters sit."""


@dataclass
class UNetConfig:
    """Architecture of a U-Net; stored in the model file so a model can be rebuilt exactly."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    in_channels: int = 1
    n_classes: int = N_CLASSES
    dropout: float = 0.18
    dropout_mode: str = "block"

    def __post_init__(self) -> None:
        self.widths = tuple(int(width) for width in self.widths)
        if not self.widths or min(self.widths) < 1:
            raise ValueError(f"widths must be positive channel counts, got {self.widths}")
        if self.in_channels < 1 or self.n_classes < 1:
            raise ValueError("in_channels and n_classes must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.dropout_mode not in DROPOUT_MODES:
            raise ValueError(
                f"dropout_mode must be one of {DROPOUT_MODES}, got {self.dropout_mode!r}"
            )

    @property
    def factor(self) -> int:
        """Input sizes must be multiples of this for the pooled maps to line up with the skips."""
        return 2 ** (len(self.widths) - 1)

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (widths as a list)."""
        data = asdict(self)
        data["widths"] = list(self.widths)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> UNetConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise TypeError rather than being dropped."""
        known = {field.name for field in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise TypeError(f"unknown architecture keys {unknown}")
        return cls(**data)


UNET_CONFIGS: dict[str, UNetConfig] = {
    # The default: fast on a laptop CPU. Dropout only at the bottleneck, because channel dropout
    # in the 16- and 32-channel blocks would switch off a large share of the few maps that see
    # single-pixel hot pixels and small clusters.
    "small": UNetConfig(widths=(16, 32, 64, 128), dropout_mode="bottleneck"),
    # The original project's network (7.76 M parameters).
    "seed": UNetConfig(widths=(32, 64, 128, 256, 512), dropout_mode="block"),
}


class _Block(nn.Module):
    """Two 3×3 convolutions with ELU, optionally with Dropout2d between them."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.drop = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.act = nn.ELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.drop(self.act(self.conv1(x)))))


def _block_dropouts(config: UNetConfig) -> list[float]:
    """Dropout rate of each encoder level (the decoder reuses the rate of its level)."""
    depth = len(config.widths)
    if config.dropout_mode == "block":
        return [config.dropout] * depth
    return [0.0] * (depth - 1) + [config.dropout]


class UNet(nn.Module):
    """U-Net returning logits ``(N, n_classes, H, W)`` for inputs ``(N, in_channels, H, W)``."""

    def __init__(self, config: UNetConfig) -> None:
        super().__init__()
        self.config = config
        widths, rates = config.widths, _block_dropouts(config)
        ins = (config.in_channels, *widths[:-1])
        self.down = nn.ModuleList(
            _Block(i, o, r) for i, o, r in zip(ins, widths, rates, strict=True)
        )
        self.upsample = nn.ModuleList(
            nn.ConvTranspose2d(widths[level + 1], widths[level], 2, stride=2)
            for level in reversed(range(len(widths) - 1))
        )
        self.up = nn.ModuleList(
            _Block(2 * widths[level], widths[level], rates[level])
            for level in reversed(range(len(widths) - 1))
        )
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)
        self._init_weights()

    def _init_weights(self) -> None:
        """He-normal weights, zero biases (the Keras original's): suits ELU without batch norm."""
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        x = _pad_to_multiple(x, self.config.factor)
        skips = []
        for level, block in enumerate(self.down):
            if level:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for upsample, block, skip in zip(self.upsample, self.up, reversed(skips[:-1]), strict=True):
            x = block(torch.cat([upsample(x), skip], dim=1))
        return self.head(x)[..., :height, :width]


def _pad_to_multiple(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``factor``; reflect keeps noise statistics at the edge.

    Reflection needs the pad to be shorter than the side, so tiny frames are replicated instead.
    """
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % factor, -width % factor
    if not (pad_h or pad_w):
        return x
    mode = "reflect" if pad_h < height and pad_w < width else "replicate"
    return F.pad(x, (0, pad_w, 0, pad_h), mode=mode)


def build_unet(name_or_config: str | UNetConfig) -> UNet:
    """A fresh U-Net from a named config (``small``, ``seed``) or an explicit one."""
    if isinstance(name_or_config, UNetConfig):
        return UNet(name_or_config)
    if name_or_config not in UNET_CONFIGS:
        names = ", ".join(UNET_CONFIGS)
        raise InputError(f"unknown network config {name_or_config!r}: choose one of {names}")
    return UNet(replace(UNET_CONFIGS[name_or_config]))  # a copy: the registry stays pristine


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
