"""Training memory per GPU (hitvideo_bench.memory): the fake-device trace counts what a real forward
saves, state is 16 bytes per trained parameter (+4 with EMA), activations follow the batch, and
``hitbench validate`` prints an estimate for every trainable component."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from hitbench_builtin.generators.ar_llama import ARLlamaGenerator
from hitbench_builtin.tokenizers.hitvideo import Discriminator, HiTVideoConfig, HiTVideoTokenizer
from hitbench_builtin.tokenizers.masked import MaskedTokenizer
from hitvideo_bench import memory
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput
from hitvideo_bench.manager import get_catalog
from hitvideo_bench.training import Execution

ROOT = Path(__file__).resolve().parent.parent
CLIP = (16, 64, 64)


pytestmark = pytest.mark.usefixtures("one_thread")


def tokenizer_config(**train) -> HiTVideoConfig:
    """Tiny hitvideo with a GAN; LPIPS off (its real weights are not needed), LFQ sampling half the tokens
    for its entropy."""
    return get_catalog().make_config("tokenizer", "hitvideo", "tiny", {
        "loss": {"perceptual": 0, "adversarial": 0.01, "entropy_sample_fraction": 0.5},
        "train": {"batch_size": 2, **train}})


def generator_config(**train):
    return get_catalog().make_config("generator", "ar-llama", "tiny", {"train": {"batch_size": 4, **train}})


def tiny_tokenizer() -> HiTVideoTokenizer:
    """The tiny hitvideo on the meta device: what a generator is built over (its grids for CLIP, its codebooks)."""
    with torch.device("meta"):
        return HiTVideoTokenizer(tokenizer_config())


def measured(modules: list[nn.Module], step) -> int:
    """Saved-tensor bytes of a real CPU forward, with the hook the estimate uses."""
    saved = memory.SavedTensorBytes("cpu", exclude=modules)
    with saved:
        step()
    return saved.nbytes


# the trace on fake CPU tensors is compared with a real CPU forward: same kernels, so the same bytes
TOLERANCE = 0.01


def real_step_bytes(task, batch, step: int, precision: str = "fp32") -> int:
    """Saved-tensor bytes of the same training step on real CPU tensors, seeded as the estimate seeds it."""
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        return measured([*task.modules().values(), *task.held_modules()],
                        lambda: memory.first_loss(task, batch, step))


@pytest.mark.parametrize("checkpointing", [False, True])
def test_tokenizer_trace_counts_what_a_real_forward_saves(checkpointing):
    """The estimate traces the task's own training step (every layer, the coarse decode, the GAN) on fake tensors;
    ``run.grad_checkpointing`` reaches the task through its checkpoint_activations()."""
    config = tokenizer_config()
    estimate = memory.training_memory(HiTVideoTokenizer, config, CLIP, device="cpu",
                                      execution=Execution(grad_checkpointing=checkpointing))
    assert estimate.grad_checkpointing is checkpointing
    task = HiTVideoTokenizer(config).training_task(None, torch.device("cpu"), shapes_only=True)
    if checkpointing:
        task.checkpoint_activations(True)
    real = real_step_bytes(task, task.example_batch(2, CLIP), task.trace_step(config.train.steps))
    assert real > 0
    assert estimate.activation_bytes == pytest.approx(real, rel=TOLERANCE)


@pytest.mark.parametrize("precision, checkpointing", [("fp32", False), ("fp32", True), ("bf16", False)])
def test_generator_trace_counts_what_a_real_forward_saves(precision, checkpointing):
    tok = tiny_tokenizer()
    grids = tok.token_grid_shapes(*CLIP)
    config = generator_config(precision=precision)
    estimate = memory.training_memory(ARLlamaGenerator, config, grids, device="cpu", tokenizer=tok, clip_shape=CLIP,
                                      execution=Execution(grad_checkpointing=checkpointing))
    gen = ARLlamaGenerator(generator_config(precision=precision), tokenizer=tok, clip_shape=CLIP)
    task = gen.training_task(None, torch.device("cpu"), shapes_only=True)
    if checkpointing:
        task.checkpoint_activations(True)
    real = real_step_bytes(task, task.example_batch(4, grids), 0, precision)
    assert estimate.activation_bytes == pytest.approx(real, rel=TOLERANCE)


def generator_memory(config, world_size: int = 1, execution: Execution | None = None):
    tok = tiny_tokenizer()
    return memory.training_memory(ARLlamaGenerator, config, tok.token_grid_shapes(*CLIP), world_size=world_size,
                                  tokenizer=tok, clip_shape=CLIP, execution=execution)


def test_checkpointing_and_bf16_save_less():
    base = memory.training_memory(HiTVideoTokenizer, tokenizer_config(), CLIP, device="cpu")
    ckpt = memory.training_memory(HiTVideoTokenizer, tokenizer_config(), CLIP, device="cpu",
                                  execution=Execution(grad_checkpointing=True))
    assert ckpt.activation_bytes < base.activation_bytes
    fp32 = generator_memory(generator_config())
    bf16 = generator_memory(generator_config(precision="bf16"))
    assert bf16.activation_bytes < fp32.activation_bytes
    ckpt = generator_memory(generator_config(), execution=Execution(grad_checkpointing=True))
    assert ckpt.activation_bytes < fp32.activation_bytes


def test_state_is_16_bytes_per_trained_parameter_plus_4_with_ema():
    plain = memory.training_memory(HiTVideoTokenizer, tokenizer_config(), CLIP, device="cpu")
    ema = memory.training_memory(HiTVideoTokenizer, tokenizer_config(ema=0.999), CLIP, device="cpu")
    config = tokenizer_config()
    with torch.device("meta"):
        tok, disc = HiTVideoTokenizer(config), Discriminator(config.disc_channels)
    params = sum(p.numel() for m in (tok, disc) for p in m.parameters())
    buffers = sum(b.numel() * b.element_size() for b in tok.buffers())
    assert plain.trainable_params == params  # the discriminator trains beside the tokenizer
    assert plain.state_bytes == 16 * params + buffers
    ema_entries = sum(v.numel() for m in (tok, disc) for v in m.state_dict().values() if v.is_floating_point())
    assert ema.state_bytes - plain.state_bytes == 4 * ema_entries
    assert ema.activation_bytes == plain.activation_bytes
    assert plain.total_bytes == plain.state_bytes + plain.activation_bytes


def wrapped_base(config) -> HiTVideoTokenizer:
    """The (untrained) tokenizer a masked config wraps, built by the catalog as the core builds it (a wrapper gets
    its base as ``base=``, it never builds it)."""
    catalog = get_catalog()
    name, preset, overrides = catalog.wrapped_ref("masked", config.preset,
                                                  config.model_dump(mode="json", exclude={"preset"}))
    return catalog.create("tokenizer", name, preset=preset, overrides=overrides)


def test_a_fill_trained_on_a_frozen_base_counts_the_base_once():
    """The masked wrapper trains its fill and the base's decoder: 16 bytes for those, 4 for the frozen rest."""
    config = get_catalog().make_config("tokenizer", "masked", "tiny", {
        "strategy": "learned", "finetune_decoder": True, "train": {"steps": 10, "batch_size": 2}})
    estimate = memory.training_memory(MaskedTokenizer, config, CLIP, device="cpu", base=wrapped_base(config))
    with torch.device("meta"):
        tok = MaskedTokenizer(config, base=wrapped_base(config))
    trained = {id(p) for p in [tok.mask_embedding, *tok.base.decoder_parameters()]}
    n_trained = sum(p.numel() for p in tok.parameters() if id(p) in trained)
    n_frozen = sum(p.numel() for p in tok.parameters() if id(p) not in trained)
    buffers = sum(b.numel() * b.element_size() for b in tok.buffers())
    assert estimate.trainable_params == n_trained
    assert estimate.state_bytes == 16 * n_trained + 4 * n_frozen + buffers
    assert estimate.activation_bytes > 0


def test_activations_follow_the_batch_state_does_not():
    for estimate in (
            lambda b: memory.training_memory(HiTVideoTokenizer, tokenizer_config(batch_size=b), CLIP),
            lambda b: generator_memory(generator_config(batch_size=b))):
        one, two, four = estimate(8), estimate(16), estimate(32)  # the last steps: a quarter of them, whole
        assert one.state_bytes == two.state_bytes == four.state_bytes
        assert two.activation_bytes == pytest.approx(2 * one.activation_bytes, rel=0.05)
        assert four.activation_bytes == pytest.approx(2 * two.activation_bytes, rel=0.05)


def test_world_size_splits_the_global_batch():
    whole = generator_memory(generator_config(batch_size=8))
    split = generator_memory(generator_config(batch_size=32), world_size=4)
    assert (split.batch, split.world_size) == (8, 4)
    assert split.activation_bytes == whole.activation_bytes
    assert "batch 8 of 32 over 4 GPUs" in split.describe()
    assert memory.per_gpu_batch(10, 4) == 3  # rank 0 takes the larger share
    uneven = generator_memory(generator_config(batch_size=10), world_size=4)
    assert "batch 3 of 10 over 4 GPUs" in uneven.describe()  # the configured global batch, not 3 x 4
    with pytest.raises(memory.NotEstimated, match="train.batch_size 4 cannot be split over 8 processes"):
        memory.per_gpu_batch(4, 8)
    with pytest.raises(BadInput, match="at least 1"):
        memory.per_gpu_batch(4, 0)


def test_components_that_do_not_train_are_not_estimated():
    config = get_catalog().make_config("tokenizer", "masked", "tiny", {})  # train.steps 0: nothing trains
    with pytest.raises(memory.NotEstimated, match="MaskedTokenizer is not trainable"):
        memory.training_memory(MaskedTokenizer, config, CLIP, base=wrapped_base(config))
    with pytest.raises(memory.NotEstimated, match="no train settings"):
        memory.training_memory(MaskedTokenizer, SimpleNamespace(), CLIP)


def test_validate_paper_prints_memory_for_tokenizer_and_generator(capsys):
    """The paper presets train in bf16 (a component's train: block); activation checkpointing is the run's
    (run.grad_checkpointing), which reaches every task through its checkpoint_activations()."""
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--set", "scale=paper",
                 "--set", "run.grad_checkpointing=true"]) == 0
    lines = capsys.readouterr().out.splitlines()
    tokenizers = [line for line in lines if line.startswith("    tokenizer ")]
    generators = [line for line in lines if line.startswith("    generator ")]
    assert len(tokenizers) == len(generators) == 2  # single-layer, hitvideo
    for line in tokenizers:
        assert "training memory per GPU at batch 8 (bf16, grad checkpointing): ~" in line
    for line in generators:
        assert "B parameters; training memory per GPU at batch 256 (bf16, grad checkpointing): ~" in line
        assert "GiB (state " in line and " + activations " in line
        advice = next(line for line in lines[lines.index(line) + 1:] if not line.strip().startswith("note:"))
        assert advice.strip().startswith("fits 80 GB with: fsdp over ")  # run.strategy ddp (the default): not as is


def test_validate_nproc_and_not_estimated(capsys):
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("training memory per GPU at batch 4 of 8 over 2 GPUs (fp32)") == 4  # 2 tokenizers, 2 generators
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "8"]) == 0
    assert capsys.readouterr().out.count("training memory per GPU at batch 1 of 8 over 8 GPUs (fp32)") == 4
    assert main(["validate", str(ROOT / "recipes" / "ablation_layers.yaml"), "--nproc", "16"]) == 0
    out = capsys.readouterr().out
    assert out.count("training memory: not estimated (train.batch_size 8 cannot be split over 16 processes)") == 4
    assert main(["validate", str(ROOT / "recipes" / "ablation_masking.yaml")]) == 0
    out = capsys.readouterr().out  # every fill fine-tunes the decoder: estimated like any trainable tokenizer
    masked = [line for line in out.splitlines() if "tokenizer masked (tiny)" in line]
    assert masked and all("training memory per GPU at batch 4 (fp32): ~" in line for line in masked)
    assert "not estimated" not in out


def test_the_core_imports_no_built_in_plugin():
    """The memory estimate (and everything else in the core) reaches components only through their contract."""
    import ast

    core = ROOT / "hitvideo_bench"
    for path in core.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not any(n.split(".")[0] == "hitbench_builtin" for n in names), f"{path} imports {names}"


def test_a_third_party_tokenizer_gets_an_estimate_from_its_own_task():
    """A tokenizer outside the built-ins declares its training task and gets the same estimate a built-in does."""
    from hitvideo_bench.training import TrainingTask

    class FixtureTask(TrainingTask):
        def __init__(self, net):
            self.net = net

        def modules(self):
            return {"net": self.net}

        def training_step(self, batch, step, trainer):
            trainer.step(self.net(batch["video"]).square().mean(), "main")
            return {}

        def example_batch(self, batch, shape):
            return {"video": torch.rand(batch, 3, *shape)}

    class FixturePluginTokenizer(HiTVideoTokenizer):
        def __init__(self, config):
            super().__init__(config)
            self.net = torch.nn.Conv3d(3, 8, 3, padding=1)

        def training_task(self, data, device, *, shapes_only=False):
            return FixtureTask(self.net)

    estimate = memory.training_memory(FixturePluginTokenizer, tokenizer_config(), CLIP, device="cpu")
    assert estimate.trainable_params == 8 * 3 * 27 + 8
    assert estimate.state_bytes == 16 * estimate.trainable_params
    assert estimate.activation_bytes >= 4 * 8 * estimate.batch * math.prod(CLIP)  # the conv output, saved by square
    assert memory.format_count(estimate.trainable_params) == "656"
    assert memory.format_count(4_700) == "4.7 k" and memory.format_count(5_220_000_000) == "5.22 B"
    # activation checkpointing is the task's opt-in ability: a task without checkpoint_activations() is estimated
    # (and trained) without it under run.grad_checkpointing, and the estimate says so
    without = memory.training_memory(FixturePluginTokenizer, tokenizer_config(), CLIP, device="cpu",
                                     execution=Execution(grad_checkpointing=True))
    assert not without.grad_checkpointing and without.activation_bytes == estimate.activation_bytes
    assert any("does not implement checkpoint_activations" in note for note in without.notes)


# ------------------------------------------------------------------------------------------ fsdp, micro-batches


def generator_trace(execution: Execution | None = None, **train):
    tok = tiny_tokenizer()
    return memory.TrainingTrace(ARLlamaGenerator, generator_config(**train), tok.token_grid_shapes(*CLIP),
                                device="cpu", tokenizer=tok, clip_shape=CLIP, execution=execution)


def test_fsdp_shards_the_units_state_and_gathers_one_unit_at_a_time():
    """Over 4 GPUs the units' parameters (16 bytes each) take a quarter, what lies outside them stays whole; the
    largest unit is gathered with its gradient, and the next unit's parameters beside it."""
    from hitvideo_bench.sharding import sharded_bytes

    trace = generator_trace(batch_size=8)
    ddp, fsdp = trace.estimate(world_size=4), trace.estimate(world_size=4, strategy="fsdp")
    units = trace.task.shard_units()
    inside = [p for unit in units for p in unit.parameters()]
    assert ddp.state_bytes - fsdp.state_bytes == sum(16 * p.numel() - sharded_bytes(p.numel(), 4, 16) for p in inside)
    sizes = sorted((sum(p.numel() for p in unit.parameters()) for unit in units), reverse=True)
    assert fsdp.gathered_bytes == 4 * (2 * sizes[0] + sizes[1]) and ddp.gathered_bytes == 0
    assert fsdp.activation_bytes == ddp.activation_bytes  # fp32: the same step
    assert fsdp.total_bytes == fsdp.state_bytes + fsdp.gathered_bytes + fsdp.activation_bytes
    assert "batch 2 of 8 over 4 GPUs (fsdp, fp32): ~" in fsdp.describe() and "+ gathered " in fsdp.describe()
    one = trace.estimate(world_size=1, strategy="fsdp")  # one process: nothing to shard
    assert (one.state_bytes, one.gathered_bytes) == (trace.estimate().state_bytes, 0)
    offload = trace.estimate(world_size=4, strategy="fsdp", cpu_offload=True)
    assert offload.state_bytes == fsdp.state_bytes - sum(sharded_bytes(p.numel(), 4, 16) for p in inside)
    assert any("sharded state in CPU memory" in note for note in offload.notes)


def test_micro_batches_trace_the_activations_of_one_micro_batch():
    trace = generator_trace(Execution(micro_batch=2), batch_size=8)
    micro, whole = trace.estimate(world_size=2), trace.estimate(world_size=2, micro_batch=4)
    assert (micro.batch, micro.micro_batch) == (4, 2)
    assert micro.activation_bytes == pytest.approx(whole.activation_bytes / 2, rel=0.05)
    assert micro.state_bytes == whole.state_bytes
    assert "batch 4 of 8 over 2 GPUs in micro-batches of 2 (fp32)" in micro.describe()
    assert 0 < micro.largest_saved_bytes < micro.activation_bytes
    assert micro.peak_bytes == micro.total_bytes + 2 * micro.largest_saved_bytes


def test_fsdp_in_bf16_traces_with_weights_already_in_bf16():
    """FSDP gathers bf16 weights (its mixed precision): autocast then caches no bf16 copy of them for backward."""
    trace = generator_trace(batch_size=8, precision="bf16")
    ddp, fsdp = trace.estimate(world_size=2), trace.estimate(world_size=2, strategy="fsdp")
    linear = sum(m.weight.numel() for unit in trace.task.shard_units() for m in unit.modules()
                 if isinstance(m, nn.Linear))
    assert ddp.activation_bytes - fsdp.activation_bytes >= 2 * linear * 0.9
    assert fsdp.gathered_bytes == trace.estimate(world_size=2, strategy="fsdp", micro_batch=1).gathered_bytes
    sizes = sorted((sum(p.numel() for p in unit.parameters()) for unit in trace.task.shard_units()), reverse=True)
    assert fsdp.gathered_bytes == 2 * (2 * sizes[0] + sizes[1])  # in bf16


def test_fit_advice_names_the_first_setting_that_fits(monkeypatch):
    advice = sys.modules[memory.fit_advice.__module__]  # where fit_advice reads GPU_BYTES
    trace = generator_trace(batch_size=4)
    assert memory.fit_advice(trace, 1).startswith("fits 80 GB as configured (ddp over 1 GPU, micro-batch 4; ~")
    target = trace.estimate(world_size=4, strategy="fsdp", micro_batch=1)
    monkeypatch.setattr(advice, "GPU_BYTES", target.peak_bytes)  # only fsdp over 4 GPUs fits (ddp holds it all)
    assert memory.fit_advice(trace, 1).startswith(
        "fits 80 GB with: fsdp over 4 GPUs, micro-batch 1 (run.strategy fsdp, run.micro_batch 1; ~")
    monkeypatch.setattr(advice, "GPU_BYTES", 1)
    assert memory.fit_advice(trace, 1).startswith(
        "does not fit 80 GB: not with ddp or fsdp over up to 4 GPUs at micro-batch 1 (ddp over 1 GPU")


def test_validate_paper_generator_fits_80_gb_with_fsdp_over_8_gpus(capsys):
    """The paper generator over hitvideo's codebooks (5.22 B parameters) at the paper's global batch of 256: under
    DDP over 8 GPUs it needs ~160 GiB per GPU; FSDP over 8 GPUs with micro-batches of 8 brings it under 80 GB. The
    execution settings are the recipe's run: section (set with --set run.X=...), for every component of the run."""
    sets = ["--set", "scale=paper", "--nproc", "8"]
    for key, value in (("strategy", "fsdp"), ("micro_batch", "8"), ("grad_checkpointing", "true")):
        sets += ["--set", f"run.{key}={value}"]
    assert main(["validate", str(ROOT / "recipes" / "generation.yaml"), *sets]) == 0
    lines = capsys.readouterr().out.splitlines()
    i = next(i for i, line in enumerate(lines) if line.startswith("    generator") and "5.22 B parameters" in line)
    line = lines[i]
    assert "at batch 32 of 256 over 8 GPUs in micro-batches of 8 (fsdp, bf16, grad checkpointing): ~" in line
    gib = float(line.split(": ~")[1].split(" GiB")[0])
    assert gib < 80e9 / 2 ** 30
    advice = next(line for line in lines[i + 1:] if not line.strip().startswith("note:"))
    assert advice.strip().startswith("fits 80 GB as configured (fsdp over 8 GPUs, micro-batch 8; ~")
    other = next(line for line in lines if line.startswith("    generator") and "4.67 B parameters" in line)
    assert "over 8 GPUs in micro-batches of 8 (fsdp, bf16, grad checkpointing)" in other  # run: is the whole run's
    # under run.strategy ddp (the default) the advice names fsdp: test_validate_paper_prints_memory_for_tokenizer_...


def test_validate_names_a_training_crop_that_leaves_a_layer_under_2_cells(capsys):
    recipe = str(ROOT / "recipes" / "reconstruction.yaml")
    sets = ["--set", "variants.hitvideo.tokenizer.config.crop_size=32",
            "--set", "variants.hitvideo.tokenizer.config.crop_until=0.5"]
    assert main(["validate", recipe, *sets]) == 0  # a warning, not an error
    warnings = [line.strip() for line in capsys.readouterr().out.splitlines() if "warning:" in line]
    assert warnings and all(w.startswith("warning: crop_size 32 (16x32x32 crops of 16x64x64 clips) leaves layer ")
                            for w in warnings)
    assert any("layer 3's grid at 1x1x1" in w for w in warnings)
    assert main(["validate", recipe]) == 0
    assert "warning:" not in capsys.readouterr().out
