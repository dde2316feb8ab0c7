"""Registration: the components this plugin adds, and the pretrained file its metric needs."""

from hitvideo_bench.api import WeightInfo, hookimpl, torch_checkpoints

#: where `hitbench weights --download example-projection` fetches the file. Nothing is published there
#: (example.org is reserved for examples); a real plugin points at its own release asset.
PROJECTION_URL = "https://example.org/hitbench-example/hitbench-example-patch-projection-v1.safetensors"


@hookimpl
def hitbench_register_components(catalog):
    # a "module:Class" string: the model is imported only when a recipe uses it
    catalog.add("tokenizer", "patch-binary", "hitbench_example.tokenizer:PatchBinaryTokenizer",
                description="example plugin: 1x4x4 patches -> binary codes (LFQ-style), one layer", version="1")
    catalog.add("metric", "patch-distance", "hitbench_example.metric:PatchProjectionDistance",
                description="example plugin: mean L2 distance of 4x4 patches projected by a pretrained matrix",
                version="1")


@hookimpl
def hitbench_register_weights():
    # listed by `hitbench weights`, accepted by --import, fetched by --download, found by weights.find()
    from hitbench_example.metric import PROJECTION_FILE, WEIGHT_NAME, check_projection

    return [WeightInfo(WEIGHT_NAME, used_by="patch-distance", path=torch_checkpoints() / PROJECTION_FILE,
                       url=PROJECTION_URL, size="3 KB", check=check_projection,
                       checksum_note="an example, no file is released; the file is checked for a 16x48 "
                                     "float tensor 'projection', and the sha256 used is recorded with each value")]
