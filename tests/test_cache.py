"""The component cache's pieces: where it lives, its content hash (pinned: a change would orphan every cached
component), folder names and the completion marker. The load branch and the key's contents are tested end to
end in test_stages.py, the training lock in test_runner.py."""

from __future__ import annotations

from pathlib import Path

from hitvideo_bench import cache


def test_the_root_is_hitbench_cache_or_the_home_cache(monkeypatch, tmp_path):
    """Kills: cache_root ignoring $HITBENCH_CACHE, treating an empty one as set, or another default folder."""
    monkeypatch.setenv("HITBENCH_CACHE", str(tmp_path / "c"))
    assert cache.cache_root() == tmp_path / "c"
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for unset in (lambda: monkeypatch.setenv("HITBENCH_CACHE", ""), lambda: monkeypatch.delenv("HITBENCH_CACHE")):
        unset()
        assert cache.cache_root() == tmp_path / "home" / ".cache" / "hitbench"


def test_stable_hash_is_pinned_and_ignores_key_order():
    """Kills: any change to stable_hash's canonical JSON (key order, separators, str of non-JSON values) or length."""
    value = {"b": 1, "a": [1, 2.5, None], "p": Path("/x")}
    assert cache.stable_hash(value) == "ec9d1a73f3ee"
    assert cache.stable_hash({"p": Path("/x"), "a": [1, 2.5, None], "b": 1}) == "ec9d1a73f3ee"
    assert cache.stable_hash({"b": 1}, length=20) == "eb8ed3ccb5023093b56f"


def test_component_folders_and_the_completion_marker(monkeypatch, tmp_path):
    """Kills: component_dir leaving out the kind, name or hash; a folder complete without its marker."""
    monkeypatch.setenv("HITBENCH_CACHE", str(tmp_path))
    folder = cache.component_dir("tokenizer", "fixture-pool", {"seed": 0})
    assert folder == tmp_path / "tokenizer" / f"fixture-pool-{cache.stable_hash({'seed': 0})}"
    assert cache.component_dir("tokenizer", "fixture-pool", {"seed": 1}) != folder
    folder.mkdir(parents=True)
    assert not cache.is_complete(folder)
    cache.mark_complete(folder, {"steps": 3})
    assert cache.is_complete(folder) and cache.read_summary(folder) == {"steps": 3}
