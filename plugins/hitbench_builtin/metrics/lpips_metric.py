"""LPIPS (the ``lpips`` package): AlexNet backbone by default as the paper's tables use, ``net: vgg`` as
TokenBench does. Frames are scaled to [-1, 1], scored frame by frame in batches and averaged over frames.

The ``lpips`` package would fetch the torchvision backbone from the network when it is not cached;
here the backbone file is looked up in the torch hub cache first (:func:`hitvideo_bench.api.find_weights`),
the network is built with a random trunk (``pnet_rand=True``, nothing downloaded) and the trunk's
weights are then loaded from that file. Missing file -> :class:`WeightsUnavailable`, never a number
from random weights.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field

from hitvideo_bench.api import BadInput, ComponentConfig, find_weights, sha256_of

from .pixel import FramewiseMetric

BACKBONE_WEIGHTS = {"alex": "alexnet", "vgg": "vgg16"}


class LPIPSConfig(ComponentConfig):
    net: Literal["alex", "vgg"] = Field("alex", description="backbone: alex (the paper's tables) or vgg (TokenBench)")
    batch_frames: int = Field(64, ge=1, description="frames scored per forward pass")


def load_trunk(network: torch.nn.Module, path) -> None:
    """Load torchvision ``features.<i>.*`` weights into the lpips trunk's ``slice<k>.<i>.*`` modules."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    trunk = network.net.state_dict()
    mapped = {}
    for key in trunk:
        _, index, param = key.split(".", 2)  # slice1.0.weight -> features.0.weight
        source = f"features.{index}.{param}"
        if source not in state:
            raise BadInput(f"{path}: not a torchvision {network.pnet_type} checkpoint (no {source!r})")
        if state[source].shape != trunk[key].shape:
            raise BadInput(f"{path}: {source} has shape {tuple(state[source].shape)}, "
                           f"expected {tuple(trunk[key].shape)}")
        mapped[key] = state[source]
    network.net.load_state_dict(mapped, strict=True)


def build_lpips(net: str) -> torch.nn.Module:
    """The calibrated LPIPS network from files on disk only (raises WeightsUnavailable when missing)."""
    import lpips

    trunk_path = find_weights(BACKBONE_WEIGHTS[net])
    lin_path = find_weights(f"lpips-lin-{net}")
    network = lpips.LPIPS(pretrained=True, net=net, pnet_rand=True, model_path=str(lin_path), verbose=False)
    load_trunk(network, trunk_path)
    return network.eval()


class LPIPS(FramewiseMetric):
    """Mean over frames of LPIPS distance between ``pred`` and ``target`` frames (lower is better)."""

    Config = LPIPSConfig
    higher_is_better = False

    def __init__(self, config=None, *, network: torch.nn.Module | None = None, **kwargs):
        """``network`` is for tests only: a stand-in with the ``lpips.LPIPS`` call signature."""
        super().__init__(config, **kwargs)
        if network is None:
            self.network = build_lpips(self.config.net)
            self.extractor = f"lpips v0.1, {self.config.net} trunk ({BACKBONE_WEIGHTS[self.config.net]})"
            self.trunk_sha256 = sha256_of(find_weights(BACKBONE_WEIGHTS[self.config.net]))
        else:
            self.network = network.eval()
            self.extractor = f"stand-in network (test only): {type(network).__name__}"
            self.trunk_sha256 = None
        for param in self.network.parameters():
            param.requires_grad_(False)

    def frame_scores(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        out = []
        step = self.config.batch_frames
        with torch.no_grad():
            for start in range(0, pred.shape[0], step):
                a = pred[start:start + step] * 2 - 1
                b = target[start:start + step] * 2 - 1
                out.append(self.network(a, b).flatten())
        return torch.cat(out)

    def provenance(self) -> dict[str, Any]:
        return {**super().provenance(), "extractor": self.extractor, "trunk_sha256": self.trunk_sha256,
                "input_range": "[-1, 1]", "averaging": "mean over frames"}


__all__ = ["LPIPS", "LPIPSConfig", "build_lpips", "load_trunk"]
