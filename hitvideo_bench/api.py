"""The plugin API: the one module a plugin imports from hitvideo-bench.

Everything a built-in component uses from the core is here, so a third-party plugin gets exactly what a
built-in gets; a test fails when a plugin module imports anything else from ``hitvideo_bench``. The
contract's changes between versions are listed in docs/plugins.md ("Changelog of the contract"); a plugin
can check :data:`CONTRACT_VERSION` (or :func:`require_contract`) when it is loaded.
"""

from __future__ import annotations

from .cache import cached_component, component_dir
from .components import (BenchMetric, Codec, ComponentConfig, Compressed, EmptyConfig, Generator, Tokenizer,
                         VideoDataset)
from .contract import CONTRACT_VERSION, require_contract
from .errors import BadInput, HitbenchError, RunFailed, ShapeError, WeightsUnavailable
from .faults import current_log
from .hookspecs import hookimpl
from .io import atomic_path
from .isolation import WorkerFailed, shared_worker
from .memory import format_count
from .report import save_figure
from .tokens import TokenPyramid
from .training import Execution, TrainConfig, Trainer, TrainingTask, local_training, train
from .video import crop_resize, from_uint8_frames, to_uint8_frames
from .weights import (WeightInfo, find as find_weights, hf_hub_cache, hf_snapshot, info as weight_info,
                      read_hf_config, sha256_of, torch_checkpoints, weight_file_of)

__all__ = [
    "BadInput", "BenchMetric", "CONTRACT_VERSION", "Codec", "ComponentConfig", "Compressed", "EmptyConfig", "Execution",
    "Generator", "HitbenchError", "RunFailed", "ShapeError", "TokenPyramid", "Tokenizer", "TrainConfig", "Trainer",
    "TrainingTask", "VideoDataset", "WeightInfo", "WeightsUnavailable", "WorkerFailed", "atomic_path",
    "cached_component", "component_dir", "crop_resize", "current_log", "find_weights", "format_count",
    "from_uint8_frames", "hf_hub_cache", "hf_snapshot", "hookimpl", "local_training", "read_hf_config",
    "require_contract", "save_figure", "sha256_of", "shared_worker", "to_uint8_frames", "torch_checkpoints", "train",
    "weight_file_of", "weight_info",
]
