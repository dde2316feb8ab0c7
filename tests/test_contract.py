"""One contract test over the whole catalog (timm-style): every registered tokenizer, codec, generator, metric and
dataset (the built-ins, the example plugin and the test fixture plugin) is built at ``tiny`` and put through the
contract of its kind in hitvideo_bench.components: shapes, value ranges, determinism, save/load where it applies,
and a memory estimate for whatever trains."""

from __future__ import annotations

import math
import pickle
import shutil
import sys
from pathlib import Path

import pytest
import torch

from hitvideo_bench import memory
from hitvideo_bench.checkpoint import load_pretrained, save_pretrained
from hitvideo_bench.components import METRIC_INPUTS, METRIC_STAGES, Codec, Generator, Tokenizer
from hitvideo_bench.errors import ShapeError, WeightsUnavailable
from hitvideo_bench.manager import get_plugins, load_plugins
from hitvideo_bench.tokens import TokenPyramid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples" / "hitbench-example-plugin"))  # the example plugin, without installing it
PLUGIN_ARGS = ["hitbench_fixture_plugin"]
if "patch-binary" not in load_plugins(PLUGIN_ARGS).catalog.names("tokenizer"):  # not installed, nor on the path
    PLUGIN_ARGS.append("hitbench_example.plugin")
CATALOG = load_plugins(PLUGIN_ARGS).catalog
CLIP = (16, 64, 64)  # the built-in data's tiny clips
#: metrics that train the suite's attribute probe on first use (minutes, once per test session)
PROBE_METRICS = {"probe-fd", "prompt-acc"}

pytestmark = pytest.mark.usefixtures("one_thread", "contract_plugins")


@pytest.fixture(scope="module")
def contract_plugins():
    """The process-wide plugins are those under test while this module runs (loading a saved component, or a
    wrapper building its base, goes through them)."""
    get_plugins(PLUGIN_ARGS)
    yield
    get_plugins([])


def overrides_training_task(component) -> bool:
    """Trains through the shared trainer (not by a ``fit`` of its own): it gets a memory estimate."""
    base = Tokenizer if isinstance(component, Tokenizer) else Generator
    return type(component).training_task is not base.training_task


def names(kind: str) -> list[str]:
    return [spec.name for spec in CATALOG.specs(kind)]


def create(kind: str, name: str, **deps):
    return CATALOG.create(kind, name, preset="tiny", **deps)


def clips(count: int = 2) -> dict:
    """``count`` validation clips of the built-in data with their captions and attributes."""
    ds = create("dataset", "synthetic-shapes", split="val")
    items = [ds[i] for i in range(count)]
    return {"video": torch.stack([it["video"] for it in items]), "captions": [it["caption"] for it in items],
            "attrs": [it["attrs"] for it in items]}


def check_pyramid(pyramid: TokenPyramid, tokenizer: Tokenizer, batch: int) -> None:
    assert pyramid.codebook_sizes == tokenizer.codebook_sizes
    assert [tuple(t.shape) for t in pyramid.layers] == [(batch, *g) for g in tokenizer.token_grid_shapes(*CLIP)]
    for tokens, size in zip(pyramid.layers, pyramid.codebook_sizes):
        assert tokens.dtype == torch.long and 0 <= int(tokens.min()) and int(tokens.max()) < size


def check_video(video: torch.Tensor, like: torch.Tensor) -> None:
    assert video.shape == like.shape and video.dtype == torch.float32
    assert float(video.min()) >= 0 and float(video.max()) <= 1, "videos are in [0, 1] at every boundary"


def dataset_overrides(name: str, folder: Path) -> dict:
    """A dataset that reads files (a ``root`` field) gets a fixture folder: the bundled real clip in every split."""
    if "root" not in CATALOG.get("dataset", name).config_cls().model_fields:
        return {}
    for split in ("train", "val", "test"):
        (folder / split).mkdir(parents=True)
        shutil.copy(ROOT / "examples" / "clips" / "bigbuckbunny.mp4", folder / split / "clip.mp4")
    return {"root": str(folder)}


@pytest.mark.parametrize("name", names("dataset"))
def test_dataset_contract(name, tmp_path):
    overrides = dataset_overrides(name, tmp_path / "fixture-videos")
    ds = CATALOG.create("dataset", name, preset="tiny", overrides=overrides, split="train")
    assert len(ds) > 0
    item = ds[0]
    assert tuple(item["video"].shape) == (3, *ds.clip_shape)
    check_video(item["video"], item["video"])
    assert isinstance(item["caption"], str) and isinstance(item.get("attrs", {}), dict)
    assert torch.equal(ds[0]["video"], item["video"])  # deterministic
    again = CATALOG.create("dataset", name, preset="tiny", overrides=overrides, split="train")
    assert cache_key(ds) == cache_key(again)


def cache_key(ds) -> str:
    from hitvideo_bench.cache import stable_hash

    return stable_hash(ds.identity())


@pytest.mark.parametrize("name", names("tokenizer"))
def test_tokenizer_contract(name, tmp_path):
    torch.manual_seed(0)
    tokenizer = create("tokenizer", name).eval()
    try:
        tokenizer.check_shape(*CLIP)
    except ShapeError:
        pytest.skip(f"{name} does not take {CLIP} clips")
    video = clips()["video"]
    with torch.no_grad():
        pyramid = tokenizer.encode(video)
        check_pyramid(pyramid, tokenizer, 2)
        assert all(torch.equal(a, b) for a, b in zip(tokenizer.encode(video).layers, pyramid.layers))
        for k in range(1, tokenizer.num_layers + 1):
            check_video(tokenizer.decode(pyramid, layers=k), video)
        compressed = tokenizer.compress(video)
        check_video(compressed.reconstruction, video)
        assert compressed.bits.shape == (2,) and bool((compressed.bits > 0).all())
        if tokenizer.exposes_latents:
            latents = tokenizer.tokens_to_latents(pyramid)
            assert len(latents) == tokenizer.num_layers
            channels = tokenizer.latent_channels()
            assert channels is None or [z.shape[1] for z in latents] == channels
            torch.testing.assert_close(tokenizer.decode_latents(latents).clamp(0, 1), tokenizer.decode(pyramid))
    if overrides_training_task(tokenizer) and tokenizer.trainable:
        estimate = memory.training_memory(type(tokenizer), tokenizer.config, CLIP, device="cpu")
        assert estimate.trainable_params > 0 and estimate.activation_bytes > 0
    if tokenizer.trainable:
        save_pretrained(tokenizer, tmp_path / name, "tokenizer", name)  # as the component cache saves it
        loaded = load_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            torch.testing.assert_close(loaded.decode(pyramid), tokenizer.decode(pyramid))


@pytest.mark.parametrize("name", names("codec"))
def test_codec_contract(name):
    codec: Codec = create("codec", name)
    codec.check_shape(*CLIP)
    video = clips()["video"]
    first, second = codec.compress(video), codec.compress(video)
    check_video(first.reconstruction, video)
    assert first.bits.shape == (2,) and first.bits.dtype == torch.float64 and bool((first.bits >= 0).all())
    assert torch.equal(first.bits, second.bits) and torch.equal(first.reconstruction, second.reconstruction)
    assert first.pyramid is None  # a codec has a bitstream, no tokens
    assert codec.time_limit(*CLIP) > 0
    if codec.isolated:  # the runner pickles it into a worker and compresses one clip at a time
        alone = pickle.loads(pickle.dumps(codec)).compress(video[1:])
        assert torch.equal(alone.bits, first.bits[1:]) and torch.equal(alone.reconstruction, first.reconstruction[1:])


@pytest.mark.parametrize("name", names("generator"))
def test_generator_contract(name, tmp_path):
    torch.manual_seed(0)
    tokenizer = create("tokenizer", "hitvideo").eval()
    data = clips(4)
    with torch.no_grad():
        pyramids = tokenizer.encode(data["video"])
    spec = CATALOG.get("generator", name)
    settings = spec.load().train_settings
    overrides = {settings: {"steps": 2, "batch_size": 2}} if settings else {}
    generator: Generator = CATALOG.create("generator", name, preset="tiny", overrides=overrides, tokenizer=tokenizer,
                                          clip_shape=CLIP)
    assert generator.grid_shapes == [tuple(g) for g in tokenizer.token_grid_shapes(*CLIP)]
    if generator.trainable:
        generator.fit(pyramids, data["captions"], workdir=tmp_path / "train", device=torch.device("cpu"), seed=0,
                      progress=False)
    if overrides_training_task(generator):
        grids = tokenizer.token_grid_shapes(*CLIP)
        estimate = memory.training_memory(type(generator), generator.config, grids, device="cpu", tokenizer=tokenizer,
                                          clip_shape=CLIP)
        assert estimate.trainable_params > 0
    generator.eval()
    prompts = data["captions"][:2]
    sample = generator.sample(prompts, cfg_scale=2.0, seed=3, temperature=1.0, top_k=4, top_p=None)
    check_pyramid(sample, tokenizer, 2)
    again = generator.sample(prompts, cfg_scale=2.0, seed=3, temperature=1.0, top_k=4, top_p=None)
    assert all(torch.equal(a, b) for a, b in zip(sample.layers, again.layers))  # a seed fixes the sample
    nll = generator.nll_bits_per_token(pyramids.select(slice(0, 2)), prompts)
    assert (nll is None) == (not generator.has_nll)
    if nll is not None:
        assert sorted(nll) == list(range(tokenizer.num_layers)) and all(v >= 0 for v in nll.values())
    if generator.trainable:
        save_pretrained(generator, tmp_path / name, "generator", name)
        loaded = load_pretrained(tmp_path / name, tokenizer=tokenizer).eval()
        reloaded = loaded.sample(prompts, cfg_scale=2.0, seed=3, temperature=1.0, top_k=4, top_p=None)
        assert all(torch.equal(a, b) for a, b in zip(sample.layers, reloaded.layers))


def metric_inputs(count: int = 4) -> dict:
    data = clips(count)
    target = data["video"]
    pred = (target + 0.05 * torch.randn(target.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    pixels = torch.full((count,), float(math.prod(CLIP)), dtype=torch.float64)
    pyramid = TokenPyramid([torch.randint(0, 16, (count, 4, 8, 8), generator=torch.Generator().manual_seed(1)),
                            torch.randint(0, 4, (count, 2, 4, 4), generator=torch.Generator().manual_seed(2))],
                           [16, 4])
    return {"pred": pred, "target": target, "bits": pixels * 0.1, "pixels": pixels, "pyramid": pyramid,
            "captions": data["captions"], "attrs": data["attrs"]}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in PROBE_METRICS else n
                                  for n in names("metric")])
def test_metric_contract(name):
    cls = CATALOG.get("metric", name).load()
    assert set(cls.inputs) <= set(METRIC_INPUTS) and set(cls.stages) <= set(METRIC_STAGES)
    assert cls.higher_is_better in (True, False, None)
    try:
        first, second = create("metric", name), create("metric", name)
    except WeightsUnavailable as exc:
        assert exc.hint, "a missing weight says how to get it"
        return
    inputs = metric_inputs()
    try:
        first.update(**{k: inputs[k] for k in cls.inputs})
    except WeightsUnavailable as exc:  # e.g. weights looked up on first use
        assert exc.hint
        return
    second.update(**{k: inputs[k] for k in cls.inputs})
    value, again = first.compute(), second.compute()
    values = value if isinstance(value, dict) else {"": value}
    assert values and all(math.isfinite(float(v)) for v in values.values())
    assert {k: float(v) for k, v in values.items()} == \
        {k: float(v) for k, v in (again if isinstance(again, dict) else {"": again}).items()}  # deterministic
    if cls.per_clip:  # the mean over clips of each clip's own value
        each = []
        for i in range(4):
            one = create("metric", name)
            one.update(**{k: inputs[k][i:i + 1] for k in cls.inputs})
            score = one.compute()
            each.append(float(score[""] if isinstance(score, dict) else score))
        assert float(values[""]) == pytest.approx(sum(each) / 4, rel=1e-4)
    first.reset()
    first.update(**{k: inputs[k] for k in cls.inputs})
    assert float((first.compute() if not isinstance(value, dict) else first.compute()[next(iter(values))])) == \
        pytest.approx(float(next(iter(values.values()))), rel=1e-6)
