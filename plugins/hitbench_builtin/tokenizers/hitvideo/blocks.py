"""Building blocks of the HiTVideo tokenizers: causal 3D convs, residual blocks, the main encoder and
decoder, the hierarchy's compression and up-sampling stages, and the discriminator."""

from __future__ import annotations

import math
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
    groups = max(1, min(32, channels // 4))
    while channels % groups:  # a width that is no multiple of 4 gets the most groups that divide it
        groups -= 1
    return FrameNorm(groups, channels, eps=1e-6)


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


class Res21Block(nn.Module):
    """A lighter (2+1)D residual block: per-frame norm, SiLU, a 3x3 spatial conv; per-frame norm, SiLU, a causal
    3-frame temporal conv (about half a :class:`ResBlock`'s cost, so twice the clips in the same CPU time)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm1, self.norm2 = norm(channels), norm(channels)
        self.spatial = nn.Conv3d(channels, channels, (1, 3, 3), padding=(0, 1, 1))
        self.temporal = nn.Conv3d(channels, channels, (3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm2(self.spatial(F.silu(self.norm1(x)))))
        h = torch.cat([h[:, :, :1].expand(-1, -1, 2, -1, -1), h], dim=2)  # causal: the first frame repeated
        return x + temporal_conv(h, self.temporal)


def residual_block(channels: int, cfg: HiTVideoConfig) -> nn.Module:
    """The residual block ``cfg.block`` names, at a constant width."""
    if cfg.block == "res21":
        return Res21Block(channels)
    return ResBlock(channels, channels, cfg.factorized_conv)


def projection(cin: int, cout: int, cfg: HiTVideoConfig) -> nn.Module:
    """A change of width between stages: a causal 3x3 conv (``block: resnet``) or a 1x1 conv (``res21``; none when
    the widths agree)."""
    if cfg.block == "res21":
        return nn.Identity() if cin == cout else nn.Conv3d(cin, cout, 1)
    return CausalConv3d(cin, cout, factorized=cfg.factorized_conv)


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
            if self.grad_checkpointing and self.training and isinstance(block, (ResBlock, Res21Block)):
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


def space_to_depth(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, C*st*sh*sw, T/st, H/sh, W/sw)``: each ``st x sh x sw`` patch into channels. A patch
    holds consecutive frames only, so a position depends on no frame after its own span."""
    st, sh, sw = stride
    if st == sh == sw == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def depth_to_space(x: torch.Tensor, stride: Stride) -> torch.Tensor:
    """The inverse of :func:`space_to_depth`."""
    st, sh, sw = stride
    if st == sh == sw == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (st * sh * sw), st, sh, sw, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // (st * sh * sw), t * st, h * sh, w * sw)


class PatchDown(nn.Module):
    """A conv whose kernel is its stride, as space-to-depth then a 1x1 conv: each output cell summarises exactly the
    cells it covers (no padding, nothing from a later span: causal), and oneDNN runs it fast on one thread."""

    def __init__(self, cin: int, cout: int, stride: Stride):
        super().__init__()
        self.stride = tuple(stride)
        self.proj = nn.Conv3d(cin * math.prod(self.stride), cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(space_to_depth(x, self.stride))


class PatchUp(nn.Module):
    """The mirror of :class:`PatchDown` (a transposed conv whose kernel is its stride): a 1x1 conv, then
    depth-to-space; each input cell fills exactly the cells it covers."""

    def __init__(self, cin: int, cout: int, stride: Stride):
        super().__init__()
        self.stride = tuple(stride)
        self.proj = nn.Conv3d(cin, cout * math.prod(self.stride), 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.proj(x), self.stride)


class Encoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = cfg.widths()
        self.patch = (cfg.patch_frames, cfg.patch_size, cfg.patch_size)
        blocks: list[nn.Module] = [projection(3 * math.prod(self.patch), cfg.channels, cfg)]
        cin = cfg.channels
        for width, stride in zip(widths, level_strides(cfg)):
            blocks.append(down_sample(cin, width, stride, cfg))
            blocks += [residual_block(width, cfg) for _ in range(cfg.num_res_blocks)]
            cin = width
        blocks.append(residual_block(cin, cfg))
        if cfg.block == "resnet":
            blocks += [norm(cin), nn.SiLU()]
        blocks.append(projection(cin, cfg.z_channels, cfg))
        self.net = Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(space_to_depth(x, self.patch))


class Decoder(nn.Module):
    def __init__(self, cfg: HiTVideoConfig):
        super().__init__()
        widths = cfg.widths()
        cin = widths[-1]
        blocks: list[nn.Module] = [projection(cfg.z_channels, cin, cfg), residual_block(cin, cfg)]
        for i in reversed(range(len(widths))):
            width = widths[i - 1] if i > 0 else cfg.channels
            blocks += [residual_block(cin, cfg) for _ in range(cfg.num_res_blocks)]
            blocks.append(up_sample(cin, width, level_strides(cfg)[i], cfg))
            cin = width
        self.patch = (cfg.patch_frames, cfg.patch_size, cfg.patch_size)
        out = 3 * math.prod(self.patch)
        blocks += [norm(cin), nn.SiLU(), nn.Conv3d(cin, out, 1) if cfg.block == "res21"
                   else CausalConv3d(cin, out, factorized=cfg.factorized_conv)]
        self.net = Sequential(*blocks)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return depth_to_space(self.net(z), self.patch)


def down_sample(cin: int, cout: int, stride: Stride, cfg: HiTVideoConfig) -> nn.Module:
    """An encoder level's change of grid and width (see ``HiTVideoConfig.resample``)."""
    if cfg.resample == "patch":
        return projection(cin, cout, cfg) if tuple(stride) == (1, 1, 1) else PatchDown(cin, cout, stride)
    return CausalConv3d(cin, cout, stride=stride, factorized=cfg.factorized_conv)


def up_sample(cin: int, cout: int, stride: Stride, cfg: HiTVideoConfig) -> nn.Module:
    """A decoder level's change of grid and width, the mirror of :func:`down_sample`."""
    if cfg.resample == "patch":
        return projection(cin, cout, cfg) if tuple(stride) == (1, 1, 1) else PatchUp(cin, cout, stride)
    return Upsample(cin, cout, stride, cfg.factorized_conv)


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


def compress_stage(channels: int, stride: Stride, cfg: HiTVideoConfig) -> nn.Module:
    """Latent of layer ``l-1`` -> grid of layer ``l`` (see ``HiTVideoConfig.resample``)."""
    if cfg.resample == "patch":
        return Sequential(PatchDown(channels, channels, stride), residual_block(channels, cfg))
    return CompressStage(channels, stride, cfg.factorized_conv)


def up_stage(channels: int, stride: Stride, cfg: HiTVideoConfig) -> nn.Module:
    """Grid of layer ``l`` -> prediction of layer ``l-1``'s latent, the mirror of :func:`compress_stage`."""
    if cfg.resample == "patch":
        return Sequential(PatchUp(channels, channels, stride), residual_block(channels, cfg))
    return UpStage(channels, stride, cfg.factorized_conv)


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
