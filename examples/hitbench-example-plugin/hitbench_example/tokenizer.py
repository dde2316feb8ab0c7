"""PatchBinaryTokenizer: a one-layer learned tokenizer, written as a third-party plugin would write it.

Each 1 x 4 x 4 patch is encoded by a small conv net to ``bits`` channels, each quantised to its sign
(lookup-free, straight-through), so a token is a ``bits``-bit integer. Training goes through
hitbench's shared trainer: the tokenizer returns a training task (which modules, one training step,
an example batch for the memory estimate) and hitbench trains, caches and resumes it. The latent
hooks (``tokens_to_latents``, ``decode_latents``, ``decoder_parameters``) let the built-in ``masked``
wrapper apply dynamic encoding to it, with all three fills.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from hitvideo_bench.api import ComponentConfig, ShapeError, TokenPyramid, Tokenizer, TrainConfig, TrainingTask


class PatchBinaryConfig(ComponentConfig):
    bits: int = Field(8, ge=1, le=20)
    patch: int = Field(4, ge=1)
    width: int = Field(32, ge=4)
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(steps=60, batch_size=8, lr=3e-3))
    presets = {"small": {"width": 64}, "paper": {"width": 128, "bits": 16, "patch": 8}}


class PatchBinaryTokenizer(Tokenizer):
    """Patch -> conv -> sign bits -> token; token -> bits -> conv -> patch."""

    Config = PatchBinaryConfig
    train_settings = "train"  # the config field holding its TrainConfig (it trains through hitbench's trainer)

    def __init__(self, config: PatchBinaryConfig):
        super().__init__(config)
        p, w, b = config.patch, config.width, config.bits
        self.encoder = nn.Sequential(nn.Conv3d(3, w, (1, p, p), stride=(1, p, p)), nn.GELU(), nn.Conv3d(w, b, 1))
        self.decoder = nn.Sequential(nn.Conv3d(b, w, 1), nn.GELU(), nn.ConvTranspose3d(w, 3, (1, p, p), stride=(1, p, p)))
        self.register_buffer("powers", 2 ** torch.arange(b), persistent=False)

    @property
    def codebook_sizes(self) -> list[int]:
        return [2 ** self.config.bits]

    def token_grid_shapes(self, frames, height, width):
        p = self.config.patch
        if height % p or width % p:
            raise ShapeError(f"patch-binary: height and width must be multiples of the patch size {p}, "
                             f"got {height}x{width}")
        return [(frames, height // p, width // p)]

    def quantize(self, video: torch.Tensor) -> torch.Tensor:
        """Latents in {-1, +1} with straight-through gradients."""
        z = self.encoder(video * 2 - 1)
        return z + (torch.where(z > 0, 1.0, -1.0) - z).detach()

    def encode(self, video):
        bits = (self.quantize(video) > 0).long()
        tokens = (bits * self.powers.view(1, -1, 1, 1, 1)).sum(1)
        return TokenPyramid([tokens], self.codebook_sizes)

    def decode(self, pyramid, layers=None):
        return self.decode_latents(self.tokens_to_latents(pyramid)).clamp(0, 1)

    def reconstruct(self, latents: torch.Tensor) -> torch.Tensor:
        return (self.decoder(latents) + 1) / 2

    # the latent hooks of dynamic encoding: the ±1 bits of every token, decoded unclamped

    def tokens_to_latents(self, pyramid):
        bits = (pyramid.layers[0].unsqueeze(1) // self.powers.view(1, -1, 1, 1, 1)) % 2
        return [bits.float() * 2 - 1]

    def decode_latents(self, latents, layers=None):
        return self.reconstruct(latents[0])

    def latent_channels(self):
        return [self.config.bits]

    def decoder_parameters(self):
        return list(self.decoder.parameters())

    def training_task(self, data, device, *, shapes_only=False):
        return _Task(self, data)


class _Task(TrainingTask):
    """What hitbench needs to train it: the modules, one step, and an example batch (for the memory estimate)."""

    def __init__(self, tokenizer: PatchBinaryTokenizer, data):
        self.tokenizer = tokenizer
        self.data = data  # the dataset hitbench gives (None when it only estimates memory)

    def modules(self):
        return {"tokenizer": self.tokenizer}

    def training_step(self, batch, step, trainer):
        video = batch["video"]
        with trainer.autocast():
            loss = (self.tokenizer.reconstruct(self.tokenizer.quantize(video)) - video).abs().mean()
        trainer.step(loss, "main")
        return {"l1": loss.detach()}

    def example_batch(self, batch, shape):
        return {"video": torch.rand(batch, 3, *shape)}
