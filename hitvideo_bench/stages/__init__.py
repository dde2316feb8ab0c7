"""The stages of one run: obtain (train or reuse) components (:mod:`.obtain`), then measure them (:mod:`.measure`).

Each stage returns tidy rows: ``dict(metric=..., value=..., higher_is_better=..., step=..., text=...,
provenance=...)``; the runner adds recipe, variant and seed.
"""

from .context import Row, RunContext, clip_batches, row
from .measure import (MetricSet, compression_rows, curve_eval, curve_rows, generation_rows, metric_inputs,
                      reconstruction_rows)
from .obtain import obtain_generator, obtain_tokenizer, tokenize_dataset, tokenizer_identity

__all__ = ["MetricSet", "Row", "RunContext", "clip_batches", "compression_rows", "curve_eval", "curve_rows",
           "generation_rows", "metric_inputs", "obtain_generator", "obtain_tokenizer", "reconstruction_rows", "row",
           "tokenize_dataset", "tokenizer_identity"]
