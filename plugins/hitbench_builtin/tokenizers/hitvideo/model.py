"""HiTVideo tokenizers: a causal 3D VAE with a residual coarse-to-fine hierarchy of LFQ codebooks.

Encoder: the main causal encoder gives the latent of layer 0 (the densest); each further layer's lightweight
causal compression stage compresses the previous layer's latent (``z_l = C_l(z_{l-1})``).

Residual coding (as in VQ-VAE-2, VAR and residual quantisation; the paper's "inject residual latent maps
from successive layers"): the coarsest layer quantises its latent, an overview. Going down, a learned
causal up-sampling stage (the decoder's mirror of ``C_l``) predicts each finer latent from the coarser
layers' reconstruction, and that layer quantises only what the prediction misses::

    h_{L-1} = post(Q(pre(z_{L-1})));  p_l = U_{l+1}(h_{l+1});  h_l = p_l + post(Q(pre(z_l - p_l)));  x = D(h_0)

Decoding from the ``k`` coarsest layers runs the same chain with ``h_l = p_l`` for the layers left out: a
learned prediction, which training asks to reconstruct the clip (see ``task.TokenizerTask``).

Quantisation is vector-quantize-pytorch's LFQ (MAGVIT-v2): each channel of a layer's ``quant_dims[l]``-wide
projection is quantised to its sign, so the codebook has ``2^quant_dims[l]`` implicit entries; it adds the
entropy penalty and a commitment term.

Causality: every conv is causal in time and normalisation is per frame, so a token depends on no input frame
after the span of the coarsest token above it.

``single-layer`` is the same VAE with one LFQ layer; its input is resized by ``interpolate`` (256 -> 272 at
paper scale) so that its token count is close to (and not above) the multi-layer total.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from vector_quantize_pytorch import LFQ

from hitvideo_bench.api import ShapeError, TokenPyramid, Tokenizer

from .blocks import Decoder, Encoder, Sequential, compress_stage, level_strides, per_frame, up_stage
from .config import MIN_ENTROPY_TOKENS, HiTVideoConfig, SingleLayerConfig

Codes = list[torch.Tensor | None]


def bit_usage_entropy(x: torch.Tensor, sharpness: float = 4.0) -> torch.Tensor:
    """Mean over a layer's bits of the binary entropy (in bits, 0..1) of how often each bit is set, from soft
    bits ``sigmoid(sharpness * x)`` of the pre-quantisation values ``x (B, d, ...)``: 0 for a collapsed layer (every
    token the same), 1 when each bit is set half the time. Unlike LFQ's codebook entropy, whose softmax over the
    codebook saturates once the values sit near ±1, its gradient stays useful."""
    p = torch.sigmoid(sharpness * x.float()).transpose(0, 1).flatten(1).mean(1).clamp(1e-6, 1 - 1e-6)
    return (-(p * p.log2() + (1 - p) * (1 - p).log2())).mean()


class HiTVideoTokenizer(Tokenizer):
    """Causal 3D VAE + residual coarse-to-fine LFQ layers; layer 0 densest. See the module docstring."""

    Config = HiTVideoConfig
    train_settings = "train"

    def __init__(self, config: HiTVideoConfig):
        super().__init__(config)
        c = config
        self.encoder = Encoder(c)
        self.decoder = Decoder(c)
        z = c.z_channels
        # stages[l]: grid l -> grid l+1 (encoder); ups[l]: grid l+1 -> prediction of layer l (decoder)
        self.stages = nn.ModuleList(compress_stage(z, s, c) for s in c.layer_strides)
        self.ups = nn.ModuleList(up_stage(z, s, c) for s in c.layer_strides)
        self.pre = nn.ModuleList(nn.Conv3d(z, d, 1) for d in c.quant_dims)
        self.post = nn.ModuleList(nn.Conv3d(d, z, 1) for d in c.quant_dims)
        self.quantizers = nn.ModuleList(
            LFQ(dim=d, codebook_size=2 ** d, entropy_loss_weight=c.loss.entropy, commitment_loss_weight=c.loss.commitment,
                diversity_gamma=c.loss.diversity_gamma, frac_per_sample_entropy=c.loss.entropy_sample_fraction,
                channel_first=True)
            for d in c.quant_dims)

    def set_grad_checkpointing(self, on: bool) -> None:
        """Recompute the encoder's and decoder's residual blocks in backward (training only); switched by
        :meth:`~.task.TokenizerTask.checkpoint_activations` when the run asks for it."""
        for module in self.modules():
            if isinstance(module, Sequential):
                module.grad_checkpointing = on

    # ---------------------------------------------------------------------------- shapes (no compute)

    @property
    def codebook_sizes(self) -> list[int]:
        return [2 ** d for d in self.config.quant_dims]

    @staticmethod
    def grid_shapes(cfg: HiTVideoConfig, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        """Per-layer token grids for a clip, or :class:`ShapeError` naming what does not divide."""
        _, h, w = cfg.input_shape(frames, height, width)
        if cfg.interpolate != 1.0 and (h / cfg.interpolate != height or w / cfg.interpolate != width):
            raise ShapeError(f"interpolate {cfg.interpolate} does not map {height}x{width} to whole pixels")
        shape = [frames, h, w]
        strides = ([(cfg.patch_frames, cfg.patch_size, cfg.patch_size)] + level_strides(cfg)
                   + [tuple(s) for s in cfg.layer_strides])
        out = []
        for i, stride in enumerate(strides):
            for axis, (size, s) in enumerate(zip(shape, stride)):
                if size % s:
                    what = ("frames", "height", "width")[axis]
                    raise ShapeError(
                        f"{what} {(frames, height, width)[axis]} does not suit this tokenizer: it is down-sampled by "
                        f"{math.prod(st[axis] for st in strides)} in total (by {s} at stage {i + 1}); use a multiple "
                        f"of {math.prod(st[axis] for st in strides)}" + (f" after interpolating by {cfg.interpolate}"
                                                                          if cfg.interpolate != 1.0 and axis else ""))
            shape = [size // s for size, s in zip(shape, stride)]
            if i >= len(cfg.spatial_down):
                out.append(tuple(shape))
        return out

    def token_grid_shapes(self, frames: int, height: int, width: int) -> list[tuple[int, int, int]]:
        return self.grid_shapes(self.config, frames, height, width)

    def check_training_shape(self, frames: int, height: int, width: int) -> None:
        super().check_training_shape(frames, height, width)
        cfg = self.config
        try:  # crops are cut from the resized clip: they take no further resizing
            self.grid_shapes(cfg.model_copy(update={"interpolate": 1.0}), *cfg.crop_shape(frames, height, width))
        except ShapeError as exc:
            raise ShapeError(f"crop_frames {cfg.crop_frames} / crop_size {cfg.crop_size} on {frames}x{height}x{width} "
                             f"clips: {exc}") from None

    def training_warnings(self, frames: int, height: int, width: int) -> list[str]:
        """A training crop that leaves a layer's grid under 2 cells high or wide: there every 3x3 conv of that layer's
        stages sees mostly zero padding, so their outer taps get no gradient until whole clips arrive."""
        cfg = self.config
        crop = cfg.crop_shape(frames, height, width)
        if crop == cfg.input_shape(frames, height, width) or cfg.crop_until == 0:
            return []
        grids = self.grid_shapes(cfg.model_copy(update={"interpolate": 1.0}), *crop)
        return [f"crop_size {cfg.crop_size} ({'x'.join(map(str, crop))} crops of {frames}x{height}x{width} clips) "
                f"leaves layer {layer}'s grid at {'x'.join(map(str, grid))}, under 2 cells on a side, for the first "
                f"{cfg.crop_until:.0%} of the steps" for layer, grid in enumerate(grids) if min(grid[1:]) < 2]

    @classmethod
    def parameter_count(cls, config: HiTVideoConfig) -> int:
        """Parameters of a tokenizer built from ``config`` (on the meta device: no memory)."""
        with torch.device("meta"):
            model = cls(config)
        return sum(p.numel() for p in model.parameters())

    # ---------------------------------------------------------------------------- encode / decode

    def _resize(self, video: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if tuple(video.shape[-2:]) == size:
            return video
        return per_frame(lambda f: F.interpolate(f, size=size, mode="bilinear", align_corners=False,
                                                 antialias=True), video)

    def resize_input(self, video: torch.Tensor) -> torch.Tensor:
        """Clips resized by ``interpolate`` to what the encoder takes."""
        return self._resize(video, tuple(self.config.input_shape(*video.shape[2:])[1:]))

    def latents(self, video: torch.Tensor, resized: bool = False) -> list[torch.Tensor]:
        """Continuous latent of every layer (densest first), before residual coding; ``resized``: the clips are
        already at the encoder's input size (training crops, checked by :meth:`check_training_shape`)."""
        if not resized:
            self.check_shape(*video.shape[2:])
            video = self.resize_input(video)
        zs = [self.encoder(video * 2 - 1)]
        for stage in self.stages:
            zs.append(stage(zs[-1]))
        return zs

    def entropy_fraction(self, z: torch.Tensor) -> float:
        """Share of a layer's tokens the LFQ samples for its entropy terms: ``entropy_sample_fraction``, but at
        least :data:`MIN_ENTROPY_TOKENS` tokens (or all), so that a layer with few tokens is never left with none."""
        tokens = z.numel() // z.shape[1]
        return min(1.0, max(self.config.loss.entropy_sample_fraction, MIN_ENTROPY_TOKENS / max(tokens, 1)))

    def predict(self, layer: int, h: torch.Tensor | None) -> torch.Tensor | None:
        """Prediction of layer ``layer``'s latent from the coarser layers' reconstruction ``h`` (None at the top)."""
        return None if h is None else self.ups[layer](h)

    def quantize(self, zs: list[torch.Tensor], layers: int | None = None) -> tuple[Codes, Codes, torch.Tensor]:
        """Residual coding, coarsest first: LFQ codes and token indices of the ``layers`` coarsest layers (others
        None), and the auxiliary loss: LFQ's entropy and commitment terms, and the latent terms that make each
        layer's reconstruction ``h_l`` approximate its latent ``z_l`` (so that ``z_l - p_l`` is the residual of a
        prediction of ``z_l``): ``|h_l - sg(z_l)|^2 + latent_commitment * |z_l - sg(h_l)|^2``, as in VQ-VAE."""
        n = len(zs)
        keep_from = n - (layers or n)
        codes: Codes = [None] * n
        indices: Codes = [None] * n
        aux = zs[0].new_zeros(())
        weights = self.config.loss
        losses = torch.is_grad_enabled()  # the extra loss terms only where they can train something (not encode)
        h = None
        for l in range(n - 1, keep_from - 1, -1):
            p = self.predict(l, h)
            z = self.pre[l](zs[l] if p is None else zs[l] - (p.detach() if self.config.detach_prediction else p))
            self.quantizers[l].frac_per_sample_entropy = self.entropy_fraction(z)
            q, idx, loss = self.quantizers[l](z)
            codes[l], indices[l] = q, idx
            if weights.bit_entropy and losses:
                loss = loss + weights.bit_entropy * (1 - bit_usage_entropy(z))
            h = self.post[l](q) if p is None else p + self.post[l](q)
            if weights.latent and losses:
                loss = loss + weights.latent * (F.mse_loss(h, zs[l].detach())
                                                + weights.latent_commitment * F.mse_loss(zs[l], h.detach()))
            aux = aux + loss
        return codes, indices, aux

    def encode(self, video: torch.Tensor) -> TokenPyramid:
        _, indices, _ = self.quantize(self.latents(video))
        return TokenPyramid([i.long() for i in indices], self.codebook_sizes)

    def tokens_to_latents(self, pyramid: TokenPyramid) -> list[torch.Tensor]:
        """The ±1 LFQ codes ``(B, d_l, t, h, w)`` of every layer (masked positions hold their stored index)."""
        return [q.indices_to_codes(tok) for q, tok in zip(self.quantizers, pyramid.layers)]

    def reconstruct_latent(self, codes: Codes, layers: int | None = None) -> torch.Tensor:
        """``h_0``, the dense latent rebuilt coarse to fine from the ``layers`` coarsest layers' codes; a layer left
        out (or whose codes are None) contributes its prediction alone."""
        n = len(codes)
        keep_from = n - (layers or n)
        h = None
        for l in range(n - 1, -1, -1):
            p = self.predict(l, h)
            if l >= keep_from and codes[l] is not None:
                h = self.post[l](codes[l]) if p is None else p + self.post[l](codes[l])
            else:
                h = p
        return h

    def decode_latents(self, codes: Codes, layers: int | None = None,
                       size: tuple[int, int] | None = None) -> torch.Tensor:
        """Codes -> video in [0, 1] (unclamped), from the ``layers`` coarsest layers (finer ones predicted)."""
        video = self.decoder(self.reconstruct_latent(codes, layers))
        if size is None:
            size = (round(video.shape[-2] / self.config.interpolate), round(video.shape[-1] / self.config.interpolate))
        return (self._resize(video, size) + 1) / 2

    def decode(self, pyramid: TokenPyramid, layers: int | None = None) -> torch.Tensor:
        return self.decode_latents(self.tokens_to_latents(pyramid), layers=layers).clamp(0, 1)

    def latent_channels(self) -> list[int]:
        """The ±1 LFQ codes have one channel per bit."""
        return list(self.config.quant_dims)

    def decoder_parameters(self) -> list[nn.Parameter]:
        """What a fill strategy may fine-tune: everything after the quantisers."""
        return [p for m in (self.post, self.ups, self.decoder) for p in m.parameters()]

    def forward(self, video: torch.Tensor, layers: int | None = None, resized: bool = False
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training forward: reconstruction from the ``layers`` coarsest layers (at the size of ``video``) and the
        LFQ aux loss; ``resized``: ``video`` is already at the encoder's input size (see :meth:`latents`)."""
        codes, _, aux = self.quantize(self.latents(video, resized), layers)
        return self.decode_latents(codes, layers, size=tuple(video.shape[-2:])), aux

    # ---------------------------------------------------------------------------- training

    def training_task(self, data, device, *, shapes_only: bool = False):
        from .task import TokenizerTask

        return TokenizerTask(self, data, device, shapes_only)


class SingleLayerTokenizer(HiTVideoTokenizer):
    """The same causal VAE with one dense LFQ layer (MAGVIT-v2 style), input resized to match tokens."""

    Config = SingleLayerConfig
