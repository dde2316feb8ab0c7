"""Offline generation metrics for the built-in synthetic data, from a small video probe the suite trains.

The probe classifies the synthetic-shapes attributes (shape, colour, size, motion, background;
:data:`ATTRIBUTES`) with two small conv streams:

- a *motion* stream: the clip resampled to ``input_frames`` x ``input_size``^2 (8 x 32^2 by default),
  its frames stacked as channels (early fusion) with x/y coordinate channels, so the first layer already
  sees where the shape is in every frame and therefore which way it moves;
- an *appearance* stream: the middle frame at ``appearance_size``^2 (64^2), where a small circle, square
  and triangle still differ by a few pixels (at 32^2 the shape head stalls near 90%).

It learns from its own deterministic sample of ``train_clips`` synthetic-shapes clips (the train split's
random stream, rendered at the clip shape being evaluated, so far more clips than a recipe's train split
and never a val/test clip), with label-preserving augmentation (time reversal swaps left/right and
up/down, a horizontal flip swaps left/right), through the suite's shared trainer
(:func:`hitvideo_bench.api.train`: deterministic order, checkpoints, resume). It is cached by the hash
of its config, clip shape and data like any trained component, so it trains once.

- ``probe-fd``: Fréchet distance of the probe's penultimate features between ``pred`` and real clips
  (FVD-style, but needs no download).
- ``prompt-acc``: share of clips whose predicted attributes match those their prompt asks for, per
  attribute and all at once.

Both report ``probe_acc``: the probe's own accuracy (all attributes right) on held-out real clips of
the val split, so a reader can judge how far the numbers can be trusted (target >= 95%).

CPU threads: rendering, resampling and this small network are dominated by many small tensor ops; on a
busy 2-core machine two intra-op threads made them 10-100x *slower* than one (measured: 150 ms vs 1.5 ms
per rendered clip, 714 ms vs 36 ms per training step), so on CPU they run with ``cpu_threads`` threads
(default 1; the previous setting is restored afterwards).

Layout: :mod:`.config` (the config), :mod:`.inputs` (clips to probe inputs, CPU threads), :mod:`.model` (the
network and the trained probe), :mod:`.task` (training), :mod:`.cache` (cache identity and loading),
:mod:`.metrics` (probe-fd and prompt-acc).
"""

from .cache import obtain_probe, probe_folder
from .config import ProbeConfig
from .inputs import cpu_threads, probe_inputs, resample
from .metrics import ProbeFD, PromptAccuracy
from .model import Probe, ProbeNet
from .task import train_probe

__all__ = ["ProbeFD", "PromptAccuracy", "ProbeConfig", "ProbeNet", "Probe", "obtain_probe", "train_probe",
           "probe_folder", "probe_inputs", "resample", "cpu_threads"]
