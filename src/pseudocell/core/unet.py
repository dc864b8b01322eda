"""A plain 2-D U-Net with BatchNorm that maps a (B, C, H, W) image to a (B, 1, H, W) heatmap."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["UNet"]


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """U-Net with ``len(widths)`` levels (reference widths 64-128-256-512-512).

    Parameters
    ----------
    in_channels : int, default=1
    widths : sequence of int
        Channels at each level, shallow to deep. H and W of the input must be multiples
        of ``2 ** (len(widths) - 1)`` (:attr:`multiple`); tiled prediction pads for you.
    out_channels : int, default=1
    dropout : float, default=0.0
        Channel dropout (``Dropout2d``) after the bottleneck and after every decoder
        block; 0 builds none. With it, stochastic passes at test time (MC dropout,
        :func:`pseudocell.core.detector.heatmap_passes`) measure the model's uncertainty.
        No weights depend on it, so a model saved with any dropout loads into any.

    The output is linear (no activation): it is regressed onto Gaussian targets in [0, 1].

    >>> net = UNet(widths=(4, 8))
    >>> tuple(net(torch.zeros(2, 1, 16, 16)).shape)
    (2, 1, 16, 16)
    """

    def __init__(self, in_channels: int = 1, widths: tuple[int, ...] = (16, 32, 64, 128),
                 out_channels: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        widths = tuple(int(w) for w in widths)
        self.widths = widths
        self.dropout = float(dropout)
        self.drop = nn.Dropout2d(self.dropout) if self.dropout > 0 else nn.Identity()
        self.down = nn.ModuleList()
        cin = in_channels
        for w in widths:
            self.down.append(_block(cin, w))
            cin = w
        self.pool = nn.MaxPool2d(2)
        self.up = nn.ModuleList()
        for w_skip in reversed(widths[:-1]):
            self.up.append(_block(cin + w_skip, w_skip))
            cin = w_skip
        self.head = nn.Conv2d(cin, out_channels, 1)

    @property
    def multiple(self) -> int:
        """Input sides must be multiples of this."""
        return 2 ** (len(self.widths) - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_tap(x, None)[0]

    def forward_tap(self, x: torch.Tensor,
                    level: int | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The heatmap and the features of encoder level ``level`` (0: the first block,
        ``len(widths) - 1`` or -1: the bottleneck; None: no features), e.g. for a domain
        classifier behind a gradient-reversal layer.

        Returns ``(heatmap (B, 1, H, W), features (B, widths[level], H / 2**level,
        W / 2**level) or None)``.
        """
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = self.pool(x)
            x = block(x)
            skips.append(x)
        feats = None if level is None else skips[level]
        x = self.drop(x)
        for block, skip in zip(self.up, reversed(skips[:-1])):
            x = nn.functional.interpolate(x, size=skip.shape[-2:], mode="bilinear",
                                          align_corners=False)
            x = self.drop(block(torch.cat([x, skip], dim=1)))
        return self.head(x), feats
