"""Pretrained-weights registry: listing, offline lookup, import with checksum verification."""

from __future__ import annotations

import json
import socket

import pytest
import torch

from hitvideo_bench import weights
from hitvideo_bench.cli import main
from hitvideo_bench.errors import BadInput, WeightsUnavailable


@pytest.fixture
def empty_weight_caches(tmp_path, monkeypatch):
    """Fixture: empty torch hub and Hugging Face caches, and no network at all."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))

    def no_network(*args, **kwargs):
        raise AssertionError("weights code tried to open a network connection")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    return tmp_path


def test_registry_has_source_cache_path_and_checksum_for_each_metric(empty_weight_caches):
    reg = weights.registry()
    assert {"alexnet", "vgg16", "i3d", "clip-vit-b32"} <= set(reg)
    assert reg["alexnet"].path == empty_weight_caches / "torch" / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth"
    assert reg["alexnet"].url == "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
    assert reg["vgg16"].sha256_prefix == "397923af"
    assert reg["i3d"].path.name == "i3d_torchscript.pt" and reg["i3d"].sha256 is None
    assert reg["clip-vit-b32"].path == empty_weight_caches / "hf" / "models--openai--clip-vit-base-patch32"


def test_format_table_lists_present_and_missing(empty_weight_caches):
    text = weights.format_table()
    for name in ("alexnet", "vgg16", "i3d", "clip-vit-b32"):
        line = next(l for l in text.splitlines() if l.startswith(name + " "))
        assert "MISSING" in line, line
    assert "lpips-lin-alex  present" in text  # ships with the lpips package
    assert "https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt?dl=1" in text
    assert main(["weights"]) == 0


def test_find_missing_raises_with_a_hint_and_never_downloads(empty_weight_caches):
    for name in ("alexnet", "i3d", "clip-vit-b32"):
        with pytest.raises(WeightsUnavailable) as info:
            weights.find(name)
        assert "hitbench weights --import" in info.value.hint
    with pytest.raises(WeightsUnavailable) as info:
        weights.find("i3d")
    assert "dropbox.com" in info.value.hint and "checkpoints/i3d_torchscript.pt" in info.value.hint


def test_import_rejects_a_wrong_checksum_and_copies_nothing(empty_weight_caches):
    bogus = empty_weight_caches / "alexnet-owt-7be5be79.pth"
    bogus.write_bytes(b"not the alexnet weights")
    with pytest.raises(BadInput) as info:
        weights.import_file(bogus)
    message = str(info.value)
    assert str(bogus) in message and "7be5be79" in message and weights.sha256_of(bogus) in message
    assert not weights.registry()["alexnet"].path.exists()
    assert main(["weights", "--import", str(bogus)]) == 2


def test_import_unknown_file_names_the_expected_ones(empty_weight_caches):
    stray = empty_weight_caches / "random.bin"
    stray.write_bytes(b"xyz")
    with pytest.raises(BadInput, match="i3d_torchscript.pt"):
        weights.import_file(stray)
    with pytest.raises(BadInput, match="no such file"):
        weights.import_file(empty_weight_caches / "absent.pt")


def test_import_i3d_puts_it_where_find_looks(empty_weight_caches):
    fixture_i3d = empty_weight_caches / "download" / "i3d_torchscript.pt"
    fixture_i3d.parent.mkdir()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(fixture_i3d))  # fixture TorchScript archive
    info = weights.import_file(fixture_i3d)
    assert info.name == "i3d"
    found = weights.find("i3d")
    assert found == info.path and found.read_bytes() == fixture_i3d.read_bytes()
    assert not list(found.parent.glob("*.part"))
    assert "i3d             present" in weights.format_table()

    not_torchscript = empty_weight_caches / "elsewhere" / "i3d_torchscript.pt"
    not_torchscript.parent.mkdir()
    not_torchscript.write_bytes(b"html error page")
    with pytest.raises(BadInput, match="TorchScript"):
        weights.import_file(not_torchscript)


def _fixture_clip_folder(folder, patch_size=32):
    """Fixture: a folder shaped like a CLIP ViT-B/32 download (config, weight file, tokenizer files)."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(
        {"model_type": "clip", "vision_config": {"patch_size": patch_size, "hidden_size": 768}}))
    (folder / "model.safetensors").write_bytes(b"fixture weights")
    (folder / "vocab.json").write_text("{}")
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder


def test_import_clip_folder_into_the_hf_cache_layout(empty_weight_caches):
    source = _fixture_clip_folder(empty_weight_caches / "clip-download")
    info = weights.import_file(source)
    assert info.name == "clip-vit-b32"
    snapshot = weights.find("clip-vit-b32")
    assert snapshot == info.path and (snapshot / "model.safetensors").read_bytes() == b"fixture weights"
    repo = empty_weight_caches / "hf" / "models--openai--clip-vit-base-patch32"
    assert (repo / "refs" / "main").read_text() == snapshot.name

    with pytest.raises(BadInput, match="not a CLIP ViT-B/32"):
        weights.import_file(_fixture_clip_folder(empty_weight_caches / "clip-b16", patch_size=16))
