"""``ar-llama``: a Llama-style autoregressive text-to-video generator over token pyramids (SPEC 5).

The sequence is ``[text prefix (text_len, right-padded, masked)] [start] [video tokens]``, video tokens
coarse-to-fine. One job per module: :mod:`.config` (settings and presets), :mod:`.sequence` (the token order),
:mod:`.conditioning` (the text prefix and the unconditional embedding), :mod:`.model` (the network and its
losses), :mod:`.sampling` (KV-cached decoding with classifier-free guidance), :mod:`.task` (training).
"""

from .config import ARLlamaConfig
from .model import ARLlamaGenerator
from .sequence import IGNORE
from .task import ARLlamaTask, SequenceDataset

#: the names the training task and its dataset had when ar-llama was one module (tests and benchmarks use them)
_Task = ARLlamaTask
_SequenceDataset = SequenceDataset

__all__ = ["IGNORE", "ARLlamaConfig", "ARLlamaGenerator", "ARLlamaTask", "SequenceDataset"]
