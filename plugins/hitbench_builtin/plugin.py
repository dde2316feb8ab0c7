"""The built-in components, registered through the ``hitbench`` entry-point group like any plugin."""

from hitvideo_bench.api import hookimpl

from .weights import builtin_weights

_P = "hitbench_builtin"

BUILTINS = [
    # kind, name, target, description
    ("dataset", "synthetic-shapes", f"{_P}.datasets.synthetic:SyntheticShapes",
     "captioned clips of coloured shapes moving on backgrounds, generated from a seed (no files)"),
    ("dataset", "video-folder", f"{_P}.datasets.video_folder:VideoFolder",
     "real video files (mp4, webm, mkv, mov, avi) read with PyAV, resampled, cropped, captioned"),
    ("codec", "x264", f"{_P}.codecs.pyav:X264Codec", "H.264 (libx264) through PyAV, bare bitstream counted"),
    ("codec", "x265", f"{_P}.codecs.pyav:X265Codec", "HEVC (libx265) through PyAV, bare bitstream counted"),
    ("codec", "svtav1", f"{_P}.codecs.pyav:SvtAv1Codec", "AV1 (SVT-AV1) through PyAV, bare bitstream counted"),
    ("codec", "mean-colour", f"{_P}.codecs.reference:MeanColour",
     "reference floor: every pixel the clip's mean colour (24 bits a clip)"),
    ("metric", "psnr", f"{_P}.metrics.pixel:PSNR", "mean over frames of per-frame PSNR, data range 1"),
    ("metric", "ssim", f"{_P}.metrics.pixel:SSIM", "mean over frames of SSIM (gaussian 11, sigma 1.5)"),
    ("metric", "ms-ssim", f"{_P}.metrics.pixel:MSSSIM", "MS-SSIM per frame; fewer scales on small frames"),
    ("metric", "bpp", f"{_P}.metrics.rate:BitsPerPixel", "bits spent per pixel (tokens x log2 codebook, or bitstream)"),
    ("metric", "bpp-entropy", f"{_P}.metrics.rate:EntropyBitsPerPixel",
     "empirical (order-0) entropy of each layer's tokens per pixel: what an ideal entropy coder spends"),
    ("metric", "codebook", f"{_P}.metrics.rate:CodebookStats", "per-layer codebook usage and perplexity"),
    ("metric", "lpips", f"{_P}.metrics.lpips_metric:LPIPS", "LPIPS (AlexNet default, or VGG), frames in [-1, 1]"),
    ("metric", "fvd", f"{_P}.metrics.fvd:FVD", "Frechet video distance on I3D (Kinetics-400) features"),
    ("metric", "clipsim", f"{_P}.metrics.clipsim:CLIPSim", "CLIP ViT-B/32 prompt-frame cosine similarity, [0, 1] scale"),
    ("metric", "probe-fd", f"{_P}.metrics.probe:ProbeFD", "Frechet distance of a suite-trained video probe's features"),
    ("metric", "prompt-acc", f"{_P}.metrics.probe:PromptAccuracy",
     "share of generated clips whose probe-predicted attributes match the prompt"),
    ("tokenizer", "hitvideo", f"{_P}.tokenizers.hitvideo:HiTVideoTokenizer",
     "causal 3D VAE with hierarchical LFQ codebooks (HiTVideo)"),
    ("tokenizer", "single-layer", f"{_P}.tokenizers.hitvideo:SingleLayerTokenizer",
     "the same causal 3D VAE with one dense LFQ layer (MAGVIT-v2 style baseline)"),
    ("tokenizer", "masked", f"{_P}.tokenizers.masked:MaskedTokenizer",
     "dynamic encoding over a base tokenizer: redundant dense tokens dropped, filled by repeat/zero/learned"),
    ("metric", "mask-stats", f"{_P}.metrics.masking:MaskStats",
     "mask ratio, tokens kept and saved, bpp without masking (dynamic encoding)"),
    ("generator", "ar-llama", f"{_P}.generators.ar_llama:ARLlamaGenerator",
     "Llama-style AR transformer over coarse-to-fine token pyramids with 3D RoPE and CFG"),
]

#: a component's version enters the identity of what the cache keeps of it: bump it when a change makes
#: cached results stale (2: the hierarchical tokenizers' layer up-sampling and coarse-gradient change;
#: 3: tiny training on crops; 4, hitvideo only: layer-drop steps leave the decoder alone, learned stand-ins for
#: left-out layers; 5 and 4: squared-error loss at tiny, lr 1e-3, 900 steps, residual branches start at zero;
#: 6 and 5: tiny trains 1500 steps of 8 clips, on crops for the first half; 7 and 6: tiny's commitment 0.1, weight
#: decay 0.05, layer drops at 15 %, entropy from a quarter of the tokens, single-layer crops after its resize;
#: 8 and 7: tiny trains 1800 steps; 9 and 8: temporal convs as 2D convs (other float rounding), tiny trains 2400 steps;
#: 10 and 9: residual coarse-to-fine hierarchy with learned up-sampling stages, progressive training at every preset;
#: 12 and 11: the light LFQ terms at tiny (docs/ablations.md); 13 and 12: tiny's entropy from a sixteenth of the tokens;
#: single-layer 13: tiny trains 1750 steps, hitvideo's CPU time)
VERSIONS = {("tokenizer", "hitvideo"): "13", ("tokenizer", "single-layer"): "13", ("generator", "ar-llama"): "2",
            ("codec", "x264"): "2", ("codec", "x265"): "2"}  # x264 / x265 2: without assembly (deterministic)


@hookimpl
def hitbench_register_components(catalog):
    """Register every built-in component by lazy ``module:Class`` target."""
    for kind, name, target, description in BUILTINS:
        catalog.add(kind, name, target, description=description, version=VERSIONS.get((kind, name), "1"))


@hookimpl
def hitbench_register_weights():
    """Declare the pretrained files of the built-in metrics (LPIPS backbones, I3D, CLIP): see ``.weights``."""
    return builtin_weights()
