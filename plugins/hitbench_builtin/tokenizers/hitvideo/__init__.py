"""HiTVideo tokenizers (multi-layer ``hitvideo`` and ``single-layer``): model, blocks, configs, training task."""

from .blocks import CausalConv3d, Discriminator, ResBlock, temporal_conv
from .config import MAGVIT2_LOSS, V10_LAYOUT, HiTVideoConfig, LossConfig, SingleLayerConfig
from .model import HiTVideoTokenizer, SingleLayerTokenizer
from .task import TokenizerTask, reconstruction_loss

__all__ = ["MAGVIT2_LOSS", "V10_LAYOUT", "CausalConv3d", "Discriminator", "HiTVideoConfig", "HiTVideoTokenizer",
           "LossConfig", "ResBlock", "SingleLayerConfig", "SingleLayerTokenizer", "TokenizerTask", "reconstruction_loss",
           "temporal_conv"]
