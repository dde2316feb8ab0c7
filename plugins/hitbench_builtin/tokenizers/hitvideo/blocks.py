"""Building blocks of the HiTVideo tokenizers: causal 3D convs, residual blocks, the main encoder and
decoder, the hierarchy's compression and up-sampling stages, and the discriminator."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

if TYPE_CHECKING:
    from .config import HiTVideoConfig

Stride = tuple[int, int, int]


def per_frame(op, x: torch.Tensor) -> torch.Tensor:
    """Apply a 2D op ``(N, C, H, W) -> (N, C', H', W')`` to every frame of ``(B, C, T, H, W)``."""
    b, c, t, h, w = x.shape
    y = op(x.transpose(1, 2).reshape(b * t, c, h, w))
    return y.reshape(b, t, *y.shape[1:]).transpose(1, 2)


class CausalConv3d(nn.Module):
    """Causal 3D conv: padded on the past side in time (``kt - st`` frames, replicating the first frame).

    ``factorized`` computes it as a spatial ``1 x k x k`` conv followed by a causal temporal ``k x 1 x 1``
    conv ((2+1)D, as in R(2+1)D): the same receptive field and causality, and much cheaper to train on CPU.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: Stride = (1, 1, 1), factorized: bool = False):
        super().__init__()
        self.time_pad = max(kernel - stride[0], 0)
        if factorized:
            self.spatial = nn.Conv2d(cin, cout, kernel, stride=stride[1:], padding=kernel // 2)
            self.conv = nn.Conv3d(cout, cout, (kernel, 1, 1), stride=(stride[0], 1, 1))
        else:
            self.spatial = None
            self.conv = nn.Conv3d(cin, cout, kernel, stride=stride, padding=(0, kernel // 2, kernel // 2))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation (keeps the signal's scale through deep stacks); a factorized conv's temporal
        part starts as the identity on the current frame, so it starts as a plain 2D conv."""
        first = self.spatial if self.spatial is not None else self.conv
        nn.init.kaiming_normal_(first.weight, nonlinearity="relu")
        nn.init.zeros_(first.bias)
        if self.spatial is not None:
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[:, :, -1, 0, 0].copy_(torch.eye(self.conv.weight.shape[0]))
                self.conv.bias.zero_()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.spatial is not None:  # the 2D conv applied to every frame, as a 1 x k x k 3D conv (no transposes)
            sp = self.spatial
            x = F.conv3d(x, sp.weight.unsqueeze(2), sp.bias, stride=(1, *sp.stride), padding=(0, *sp.padding))
        if self.time_pad:
            x = torch.cat([x[:, :, :1].expand(-1, -1, self.time_pad, -1, -1), x], dim=2)
        if self.spatial is not None:
            return temporal_conv(x, self.conv)
        return self.conv(x)


def temporal_conv(x: torch.Tensor, conv: nn.Conv3d) -> torch.Tensor:
    """A ``k x 1 x 1`` 3D conv computed as a ``k x 1`` 2D conv over (time, pixels): the same result, but oneDNN
    takes it at any thread count, whereas PyTorch sends such a 3D conv on one thread to its slow reference kernels
    (measurements in benchmarks/RESULTS.md)."""
    b, c, t, h, w = x.shape
    y = F.conv2d(x.reshape(b, c, t, h * w), conv.weight.squeeze(-1), conv.bias, stride=(conv.stride[0], 1))
    return y.view(b, y.shape[1], y.shape[2], h, w)


class FrameNorm(nn.GroupNorm):
    """GroupNorm over each frame separately: statistics never mix frames (keeps causality)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return per_frame(super().forward, x)


def norm(channels: int) -> FrameNorm:
    return FrameNorm(min(32, channels // 4) or 1, channels, eps=1e-6)


class ResBlock(nn.Module):
    """Pre-norm residual block; its branch's last conv starts at zero, so the block starts as its skip path."""

    def __init__(self, cin: int, cout: int, factorized: bool = False):
        super().__init__()
        self.body = nn.Sequential(norm(cin), nn.SiLU(), CausalConv3d(cin, cout, factorized=factorized), norm(cout),
                                  nn.SiLU(), CausalConv3d(cout, cout, factorized=factorized))
        nn.init.zeros_(self.body[-1].conv.weight)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.skip(x) + self.body(x)


class Upsample(nn.Module):
    """Nearest up-sampling by ``stride``, then a causal conv."""

    def __init__(self, cin: int, cout: int, stride: Stride, factorized: bool = False):
        super().__init__()
        self.stride = tuple(stride)
        self.conv = CausalConv3d(cin, cout, factorized=factorized)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return self.conv(x)


class Sequential(nn.Sequential):
    """``nn.Sequential`` that recomputes its blocks in backward when ``grad_checkpointing`` is on."""

    grad_checkpointing = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self:
            if self.grad_checkpointing and self.training and isinstance(block, ResBlock):
                x = checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def level_strides(cfg: HiTVideoConfig) -> list[Stride]:
    """(t, h, w) stride of each encoder level (``drop_spatial_down`` applied)."""
    spatial = list(cfg.spatial_down)
    for level in [i for i, down in enumerate(spatial) if down][:cfg.drop_spatial_down]:
        spatial[level] = False
    return [(2 if t else 1, 2 if s else 1, 2 if s else 1) for s, t in zip(spatial, cfg.temporal_down)]


def space_to_depth(x: torch.Tensor, p: int, pt: int = 1) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, C*pt*p*p, T/pt, H/p, W/p)``: each ``pt x p x p`` patch into channels. A patch of
    ``pt`` frames holds consecutive frames only, so a position depends on no frame after its own span."""
    if p == 1 and pt == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // pt, pt, h // p, p, w // p, p).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * pt * p * p, t // pt, h // p, w // p)


def depth_to_space(x: torch.Tensor, p: int, pt: int = 1) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`."""
    if p == 1 and pt == 1:
        return x
    b, c, t, h, w = x.shape
    c //= pt * p * p
    x = x.reshape(b, c, pt, p, p, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c, t * pt, h * p, w * p)


class Encoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        f = cfg.factorized_conv
        self.patch = (cfg.patch_size, cfg.patch_frames)
        blocks: list[nn.Module] = [CausalConv3d(3 * cfg.patch_frames * cfg.patch_size ** 2, cfg.channels, factorized=f)]
        cin = cfg.channels
        for width, stride in zip(widths, level_strides(cfg)):
            blocks.append(CausalConv3d(cin, width, stride=stride, factorized=f))
            blocks += [ResBlock(width, width, f) for _ in range(cfg.num_res_blocks)]
            cin = width
        blocks += [ResBlock(cin, cin, f), norm(cin), nn.SiLU(), CausalConv3d(cin, cfg.z_channels, factorized=f)]
        self.net = Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(space_to_depth(x, *self.patch))


class Decoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = [cfg.channels * m for m in cfg.channel_mult]
        cin = widths[-1]
        f = cfg.factorized_conv
        blocks: list[nn.Module] = [CausalConv3d(cfg.z_channels, cin, factorized=f), ResBlock(cin, cin, f)]
        for i in reversed(range(len(widths))):
            width = widths[i - 1] if i > 0 else cfg.channels
            blocks += [ResBlock(cin, cin, f) for _ in range(cfg.num_res_blocks)]
            blocks.append(Upsample(cin, width, level_strides(cfg)[i], f))
            cin = width
        self.patch = (cfg.patch_size, cfg.patch_frames)
        blocks += [norm(cin), nn.SiLU(), CausalConv3d(cin, 3 * cfg.patch_frames * cfg.patch_size ** 2, factorized=f)]
        self.net = Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.net(z), *self.patch)


class Discriminator(nn.Module):
    """A small 3D PatchGAN: strided convs to a grid of real/fake logits."""

    def __init__(self, channels: int):
        super().__init__()
        c = channels
        self.net = nn.Sequential(
            nn.Conv3d(3, c, 3, stride=(1, 2, 2), padding=1), nn.LeakyReLU(0.2),
            nn.Conv3d(c, 2 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 2 * c), nn.LeakyReLU(0.2),
            nn.Conv3d(2 * c, 4 * c, 3, stride=2, padding=1), nn.GroupNorm(8, 4 * c), nn.LeakyReLU(0.2),
            nn.Conv3d(4 * c, 1, 3, padding=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class CompressStage(nn.Module):
    """A lightweight causal compression stage of the hierarchy: latent of layer ``l-1`` -> grid of layer ``l``."""

    def __init__(self, channels: int, stride: Stride, factorized: bool = False):
        super().__init__()
        self.net = nn.Sequential(CausalConv3d(channels, channels, stride=tuple(stride), factorized=factorized),
                                 nn.SiLU(), CausalConv3d(channels, channels, factorized=factorized))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class UpStage(nn.Module):
    """The decoder's mirror of a :class:`CompressStage`: grid of layer ``l`` -> prediction of layer ``l-1``'s latent.

    Nearest up-sampling by the stage's stride plus a learned causal residual branch that starts at zero, so the
    stage starts as the plain repeat (which keeps the latent's scale) and learns to predict the finer latent.
    """

    def __init__(self, channels: int, stride: Stride, factorized: bool = False):
        super().__init__()
        self.stride = tuple(stride)
        self.branch = nn.Sequential(norm(channels), nn.SiLU(), CausalConv3d(channels, channels, factorized=factorized),
                                    nn.SiLU(), CausalConv3d(channels, channels, factorized=factorized))
        nn.init.zeros_(self.branch[-1].conv.weight)
        nn.init.zeros_(self.branch[-1].conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride != (1, 1, 1):
            x = F.interpolate(x, scale_factor=self.stride, mode="nearest")
        return x + self.branch(x)
