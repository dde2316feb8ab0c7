"""Training of the HiTVideo tokenizers: losses, the discriminator's use, the progressive schedule, crops."""

from __future__ import annotations

import contextlib
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hitvideo_bench.api import TrainingTask, WeightsUnavailable

from .blocks import Discriminator, level_strides
from .config import LossConfig
from .model import HiTVideoTokenizer


def load_perceptual(device) -> tuple[nn.Module | None, str]:
    """LPIPS as a training loss when its weights are on disk; otherwise off, with the reason."""
    try:
        from hitbench_builtin.metrics.lpips_metric import build_lpips
    except ImportError as exc:  # the metric module is part of this plugin; keep training usable without it
        return None, f"off: {exc}"
    try:
        net = build_lpips("alex").to(device).eval()
    except WeightsUnavailable as exc:
        return None, f"off: {exc.hint}"
    for p in net.parameters():
        p.requires_grad_(False)
    return net, "on (lpips alex)"


def reconstruction_loss(rec: torch.Tensor, video: torch.Tensor, weights: LossConfig
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``l1 * L1 + l2 * squared error`` of a reconstruction, and the two terms (for the logs). A term of weight 0
    is computed outside the graph: its backward would add only zeros (tiny's L1 term)."""
    err = rec - video
    l1 = (err if weights.l1 else err.detach()).abs().mean()
    l2 = (err if weights.l2 else err.detach()).square().mean()
    return weights.l1 * l1 + weights.l2 * l2, l1, l2


@contextlib.contextmanager
def frozen(params):
    """Parameters that the graph built inside the block does not train (back to trainable after it)."""
    params = [p for p in params if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


class TokenizerTask(TrainingTask):
    """Training of a HiTVideo tokenizer through the shared trainer (see hitvideo_bench.api.train).

    Progressive, as the paper trains it: the first steps decode from the coarsest layer alone, then from the
    two coarsest, and so on (``progressive``), the encoder and decoder learning throughout. Each step with
    more than one layer also decodes part of its clips from a random smaller number of coarse layers
    (``coarse_weight``), so that every ``k`` stays a trained reconstruction once all layers are in.
    """

    #: its own checkpoint and log cadence per preset, ``(checkpoint_every, log_every)`` (the run's override them)
    CADENCE = {"tiny": (500, 100), "small": (1000, 50), "paper": (2000, 100)}

    def __init__(self, tokenizer: HiTVideoTokenizer, data, device, shapes_only: bool = False):
        self.tok = tokenizer
        self.data = data
        cfg = tokenizer.config
        self.checkpoint_every, self.log_every = self.CADENCE[cfg.preset]
        self.steps = cfg.train.steps
        self.lpips, self.perceptual_status = (None, "off: weight 0")
        if cfg.loss.perceptual > 0 and shapes_only:  # the memory estimate: LPIPS's shapes, whether or not on disk
            self.lpips, self.perceptual_status = _lpips_alex_shapes(device), "shapes only"
        elif cfg.loss.perceptual > 0:
            self.lpips, self.perceptual_status = load_perceptual(device)
        self.disc = None
        self.adversarial_status = "off: weight 0"
        if cfg.loss.adversarial > 0:
            self.disc = Discriminator(cfg.disc_channels)
            if not shapes_only:  # a shapes-only task is built on its device already
                self.disc.to(device)
            self.adversarial_status = f"on after step {self.adversarial_from}"

    @property
    def adversarial_from(self) -> int:
        return int(self.tok.config.loss.adversarial_start * self.steps)

    def modules(self) -> dict[str, nn.Module]:
        return {"tokenizer": self.tok} | ({"disc": self.disc} if self.disc is not None else {})

    def shard_units(self) -> list[nn.Module]:
        """FSDP units: each block of the encoder and decoder (convolutions, residual blocks, up-sampling, norms), each
        compression and up-sampling stage of the hierarchy, each quantiser projection in and out, the
        discriminator. The LFQ quantisers hold no parameters."""
        tok = self.tok
        blocks = [block for net in (tok.encoder.net, tok.decoder.net) for block in net
                  if next(block.parameters(), None) is not None]
        return [*blocks, *tok.stages, *tok.ups, *tok.pre, *tok.post, *([self.disc] if self.disc is not None else [])]

    def checkpoint_activations(self, on: bool) -> None:
        """Recompute the encoder's and decoder's residual blocks in backward (the run's ``grad_checkpointing``)."""
        self.tok.set_grad_checkpointing(on)

    def held_modules(self) -> list[nn.Module]:
        return [self.lpips] if self.lpips is not None else []

    def memory_notes(self) -> tuple[int, list[str]]:
        return 0, (["LPIPS is counted; training turns it off when its weights are missing"] if self.lpips else [])

    def example_batch(self, batch: int, shape: tuple[int, int, int]) -> dict[str, torch.Tensor]:
        return {"video": torch.rand(batch, 3, *shape)}

    def summary(self) -> dict[str, Any]:
        return {"perceptual": self.perceptual_status, "adversarial": self.adversarial_status}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        groups = {"main": list(self.tok.parameters())}
        if self.disc is not None:
            groups["disc"] = list(self.disc.parameters())
        return groups

    def scheduled_layers(self, step: int) -> int:
        """How many coarse layers the progressive schedule trains at this step (all of them when it is off)."""
        cfg = self.tok.config
        shares = cfg.progressive_shares()
        if shares is None:
            return len(cfg.quant_dims)
        return max(1, sum(1 for share in shares if step >= share * self.steps))

    def training_clips(self, video: torch.Tensor, step: int) -> tuple[torch.Tensor, bool]:
        """What step ``step`` trains on, and whether it is already at the encoder's input size: a random crop of
        every clip, cut after resizing it by ``interpolate`` (offsets from the global RNG, which checkpoints keep,
        so a resumed run crops alike), or after ``crop_until`` the whole clips, so that the model ends on the
        context it is evaluated with. Either way every clip of the batch (``batch_size``) trains."""
        cfg = self.tok.config
        full = cfg.input_shape(*video.shape[2:])
        shape = cfg.crop_shape(*video.shape[2:])
        if shape == full or step >= cfg.crop_until * self.steps:
            return video, False
        self.tok.check_training_shape(*video.shape[2:])
        video = self.tok.resize_input(video)
        align = cfg.patch_frames * math.prod(s[0] for s in level_strides(cfg))  # crops start on a latent frame
        crops = []
        for clip in video:
            t0 = int(torch.randint((full[0] - shape[0]) // align + 1, ())) * align
            y0, x0 = (int(torch.randint(n - c + 1, ())) for n, c in zip(full[1:], shape[1:]))
            crops.append(clip[:, t0:t0 + shape[0], y0:y0 + shape[1], x0:x0 + shape[2]])
        return torch.stack(crops), True

    def coarse_reconstruction(self, codes, video: torch.Tensor, layers: int) -> tuple[torch.Tensor, int] | None:
        """The second reconstruction of a step that decodes ``layers`` > 1 layers: the first ``coarse_batch`` of
        its clips from a random ``j < layers`` coarsest layers (the same codes), its loss and ``j``."""
        cfg = self.tok.config
        if layers < 2 or cfg.coarse_weight == 0:
            return None
        j = int(torch.randint(1, layers, ()))
        m = max(1, math.ceil(cfg.coarse_batch * video.shape[0]))
        rec = self.tok.decode_latents([c[:m] if c is not None else None for c in codes], j,
                                      size=tuple(video.shape[-2:]))
        return reconstruction_loss(rec, video[:m], cfg.loss)[0], j

    def training_step(self, batch: dict[str, Any], step: int, trainer) -> dict[str, float]:
        video, resized = self.training_clips(batch["video"], step)
        tok, loss_cfg = self.tok, self.tok.config.loss
        k = self.scheduled_layers(step)
        with trainer.autocast():
            codes, _, aux = tok.quantize(tok.latents(video, resized), k)
            rec = tok.decode_latents(codes, k, size=tuple(video.shape[-2:]))
            loss, l1, l2 = reconstruction_loss(rec, video, loss_cfg)
            loss = loss + aux
            logs = {"l1": l1.detach(), "l2": l2.detach(), "lfq_aux": aux.detach(), "layers": float(k)}
            coarse = self.coarse_reconstruction(codes, video, k)
            if coarse is not None:
                loss = loss + self.tok.config.coarse_weight * coarse[0]
                logs.update(coarse_loss=coarse[0].detach(), coarse_layers=float(coarse[1]))
            if self.lpips is not None:
                frames = lambda v: v.transpose(1, 2).flatten(0, 1) * 2 - 1  # noqa: E731
                perceptual = self.lpips(frames(rec), frames(video)).mean()
                loss = loss + loss_cfg.perceptual * perceptual
                logs["lpips"] = perceptual.detach()
            gan = self.disc is not None and step >= self.adversarial_from
            if gan:
                with frozen(self.disc.parameters()):
                    g_loss = -self.disc(rec * 2 - 1).mean()
                loss = loss + loss_cfg.adversarial * g_loss
                logs["g_adv"] = g_loss.detach()
        trainer.step(loss, "main")
        if gan:
            with trainer.autocast():
                real, fake = self.disc(video * 2 - 1), self.disc(rec.detach() * 2 - 1)
                d_loss = F.relu(1 - real).mean() + F.relu(1 + fake).mean()
            trainer.step(d_loss, "disc")
            logs["d_hinge"] = d_loss.detach()
        logs["loss"] = loss.detach()
        return logs


def _lpips_alex_shapes(device: torch.device) -> nn.Module:
    """The LPIPS network of the perceptual loss (AlexNet trunk) with random weights: its shapes, for the trace."""
    import lpips

    with warnings.catch_warnings():  # lpips passes torchvision its deprecated ``pretrained`` argument
        warnings.simplefilter("ignore", UserWarning)
        net = lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False)
    net.scaling_layer.to(device)  # its constants are made with torch.Tensor(...), on the CPU
    return net.eval().requires_grad_(False)
