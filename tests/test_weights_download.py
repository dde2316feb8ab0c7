"""``hitbench weights --download`` against a local HTTP server started by the test (no internet): placement
where runs look, resume of an interrupted download with Range, a wrong checksum, offline, proxies."""

from __future__ import annotations

import dataclasses
import io
import json
import socket
import zipfile

import pytest
from fixture_http_server import FixtureServer, local_network_only

from hitbench_builtin.weights import CLIP_FILES
from hitvideo_bench import download, weights
from hitvideo_bench.cli import main
from hitvideo_bench.download import DownloadFailed
from hitvideo_bench.errors import WeightsUnavailable

CLIP_PATH = "/openai/clip-vit-base-patch32"


def _torchscript_bytes() -> bytes:
    """Fixture: a zip archive shaped like a TorchScript file (what the i3d check looks for)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("i3d/data.pkl", b"fixture" * 500)
        archive.writestr("i3d/version", b"3\n")
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Fixture: empty weight caches, a local server holding fixture weights at the registry's file names,
    the registry pointed at it, no proxies, and no connection to anything but 127.0.0.1."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    local_network_only(monkeypatch)
    srv = FixtureServer()
    alexnet = b"fixture alexnet weights " * 1000
    srv.files = {"/i3d_torchscript.pt": _torchscript_bytes(), "/alexnet-owt-7be5be79.pth": alexnet,
                 **{f"{CLIP_PATH}/resolve/main/{name}": json.dumps({"file": name}).encode()
                    for name in CLIP_FILES},
                 f"{CLIP_PATH}/resolve/main/config.json": json.dumps(
                     {"model_type": "clip", "vision_config": {"patch_size": 32, "hidden_size": 768}}).encode(),
                 f"{CLIP_PATH}/resolve/main/pytorch_model.bin": b"fixture clip weights"}
    import hashlib

    prefix = hashlib.sha256(alexnet).hexdigest()[:8]
    original = weights.registry

    def pointed_at_server():
        reg = original()
        reg["i3d"] = dataclasses.replace(reg["i3d"], url=f"{srv.base}/i3d_torchscript.pt")
        reg["alexnet"] = dataclasses.replace(reg["alexnet"], url=f"{srv.base}/alexnet-owt-7be5be79.pth",
                                             sha256_prefix=prefix)
        reg["vgg16"] = dataclasses.replace(reg["vgg16"], url=f"{srv.base}/vgg16-397923af.pth")
        reg["clip-vit-b32"] = dataclasses.replace(reg["clip-vit-b32"], url=srv.base + CLIP_PATH)
        return reg

    monkeypatch.setattr(weights, "registry", pointed_at_server)
    yield srv
    srv.stop()


def test_download_places_the_file_where_runs_look(server, capsys):
    with pytest.raises(WeightsUnavailable, match="hitbench weights --download i3d"):
        weights.find("i3d")
    assert main(["weights", "--download", "i3d"]) == 0
    assert "i3d: downloaded: " in capsys.readouterr().out
    found = weights.find("i3d")
    assert found.read_bytes() == server.files["/i3d_torchscript.pt"]
    assert not list(found.parent.glob(".*partial"))
    assert main(["weights", "--download", "i3d"]) == 0  # present: not fetched again
    assert "i3d: present" in capsys.readouterr().out and len(server.requests) == 1


def test_an_interrupted_download_resumes_with_range(server):
    body = server.files["/alexnet-owt-7be5be79.pth"]
    server.breaks["/alexnet-owt-7be5be79.pth"] = 5000
    with pytest.raises(DownloadFailed, match=f"broke after 5000 of {len(body)} bytes.*run the same command again"):
        list(download.download(["alexnet"], progress=False))
    target = weights.registry()["alexnet"].path
    assert not target.exists() and target.with_name(f".{target.name}.partial").stat().st_size == 5000
    assert [name for name, _ in download.download(["alexnet"], progress=False)] == [weights.info("alexnet")]
    assert server.requests[-1] == ("/alexnet-owt-7be5be79.pth", "bytes=5000-")
    assert weights.find("alexnet").read_bytes() == body
    assert not target.with_name(f".{target.name}.partial").exists()


def test_a_server_that_ignores_range_restarts_the_file(server):
    server.breaks["/alexnet-owt-7be5be79.pth"] = 3000
    with pytest.raises(DownloadFailed):
        list(download.download(["alexnet"], progress=False))
    server.ranges = False
    list(download.download(["alexnet"], progress=False))
    assert weights.find("alexnet").read_bytes() == server.files["/alexnet-owt-7be5be79.pth"]


def test_a_wrong_checksum_places_nothing_and_exits_1(server, capsys):
    server.files["/alexnet-owt-7be5be79.pth"] = b"a changed file"
    assert main(["weights", "--download", "alexnet"]) == 1
    err = capsys.readouterr().err
    assert "wrong checksum for alexnet" in err and "deleted" in err and "Traceback" not in err
    target = weights.registry()["alexnet"].path
    assert not target.exists() and not target.with_name(f".{target.name}.partial").exists()


def test_a_clip_model_folder_lands_in_the_hf_cache(server):
    [(entry, outcome)] = list(download.download(["clip-vit-b32"], progress=False))
    snapshot = weights.find("clip-vit-b32")
    assert outcome == f"downloaded: {snapshot}"
    assert (snapshot / "pytorch_model.bin").read_bytes() == b"fixture clip weights"
    assert (server.base and (f"{CLIP_PATH}/resolve/main/model.safetensors", None) in server.requests)  # 404: next
    assert not (entry.path / ".download").exists()


def test_offline_is_a_clear_error(server, monkeypatch):
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    original = weights.registry
    monkeypatch.setattr(weights, "registry", lambda: {**original(), "i3d": dataclasses.replace(
        original()["i3d"], url=f"http://127.0.0.1:{port}/i3d_torchscript.pt")})
    with pytest.raises(DownloadFailed, match=r"cannot reach 127\.0\.0\.1.*proxy.*--import FILE"):
        list(download.download(["i3d"], progress=False))


def test_proxies_come_from_the_environment(server, monkeypatch):
    original = weights.registry
    monkeypatch.setattr(weights, "registry", lambda: {**original(), "i3d": dataclasses.replace(
        original()["i3d"], url="http://weights.invalid/i3d_torchscript.pt")})
    monkeypatch.setenv("http_proxy", server.base)  # the fixture server plays the proxy
    list(download.download(["i3d"], progress=False))
    assert weights.find("i3d").read_bytes() == server.files["/i3d_torchscript.pt"]


def test_unknown_and_package_names_exit_2_before_fetching(server, capsys):
    assert main(["weights", "--download", "i3d", "alexnte"]) == 2
    assert "did you mean 'alexnet'" in capsys.readouterr().err
    assert main(["weights", "--download", "lpips-lin-alex"]) == 2
    assert server.requests == []
