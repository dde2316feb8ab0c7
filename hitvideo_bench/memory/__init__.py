"""Training memory per GPU, estimated without a GPU and without allocating the model or the batch.

``hitbench validate`` prints it for each trainable component at the configured per-GPU batch
(``batch_size`` of its train settings split over ``--nproc`` processes), precision and activation checkpointing, as
``state + activations``:

State, which does not depend on the batch:

* every trained parameter (the component's, and the tokenizer's discriminator): fp32 weight,
  gradient and AdamW's two moments, 16 bytes;
* with ``ema`` in its train settings: the trainer's fp32 copy of every floating state entry, 4 bytes per parameter;
* buffers, and frozen networks the training step keeps on the GPU (LPIPS for the tokenizer, the
  generator's text encoder): their weights only.

Activations: the tensors autograd keeps for backward, summed over one training forward through
:class:`torch.autograd.graph.saved_tensors_hooks` (:class:`~.fake.SavedTensorBytes`): every saved tensor on
the GPU, each storage once (views, and a tensor saved by several ops, share it); weights are state,
not activations. The forward runs on fake tensors (:class:`~torch._subclasses.fake_tensor.FakeTensorMode`:
meta tensors, without data, that report the GPU as their device), so it allocates nothing.

Precision: autocast does not apply to meta tensors, and ``torch.autocast("cuda")`` turns itself off
on a machine without CUDA. Fake CUDA tensors carry CUDA's dispatch keys, so switching on CUDA
autocast's own per-device state (:func:`~.fake._autocast`) applies the casting policy a GPU run gets:
matmuls and convolutions in bf16/fp16, norms, softmax and losses in fp32, cast weights cached for
the step.

CPU tensors the code makes on its own stay real, as they are in training (LFQ's token-sampling mask,
RoPE position tables: small), so that a size depending on their values, such as the number of
tokens LFQ samples for its entropy over the codebook, is exact.

Under ``run.strategy: fsdp`` over N GPUs (:mod:`hitvideo_bench.sharding`), the state of the task's
shard units is divided by N (what lies outside them stays whole), one unit at a time is gathered
(``gathered``: the largest unit's parameters and their gradient in compute precision, and the next
unit's parameters, prefetched), the trace runs with the units' parameters in the compute dtype (FSDP's
mixed precision: autocast then casts no weight), and ``run.cpu_offload`` moves the sharded state to
CPU memory. With ``run.micro_batch`` the activations are those of one micro-batch.

:func:`~.advice.fit_advice` says which strategy, number of GPUs and micro-batch make a component fit an 80 GB
GPU, judged by ``peak_bytes``: the estimate plus twice the largest tensor saved for backward (its
gradient and its input's gradient exist together while backward runs through it: for the generator
the logits' log-softmax; the largest single item of what is not counted below).

Not counted, so a real run needs headroom above the estimate: memory that lives only inside
forward or backward (the gradients of activations while backward runs, the largest being the
logits' gradient for the generator; the recomputation of one checkpointed block; weights cast inside
checkpointed blocks; kernel workspaces), optimizer-step temporaries, the flat gradient copy of the
all-reduce across processes (after backward has freed the activations), the generator's caption
features, the CUDA context, the caching allocator's fragmentation and NCCL buffers.

One job per module: :mod:`.fake` (tracing a step on fake tensors), :mod:`.estimate` (a component's estimate) and
:mod:`.advice` (what fits an 80 GB GPU).
"""

from .advice import GPU_BYTES, MAX_GPUS, fit_advice
from .estimate import (TRAINED_COPIES, MemoryEstimate, TrainingTrace, first_loss, format_count, per_gpu_batch,
                       training_memory)
from .fake import NotEstimated, SavedTensorBytes

__all__ = ["GPU_BYTES", "MAX_GPUS", "MemoryEstimate", "NotEstimated", "SavedTensorBytes", "TRAINED_COPIES",
           "TrainingTrace", "first_loss", "fit_advice", "format_count", "per_gpu_batch", "training_memory"]
