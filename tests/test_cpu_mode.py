"""The reproducible CPU mode: the same weights from a short training at any x86-64 kernel level under the mode,
different ones without it; the switch; the machine a process computes on."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hitvideo_bench import cpumode
from hitvideo_bench.errors import BadInput
WORKER = Path(__file__).with_name("cpu_mode_worker.py")
#: a hand cap one level below the host's own, for each host level torch knows on x86-64
LOWER = {"AVX512": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"},
         "AVX2": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41", "MKL_CBWR": "COMPATIBLE"}}


def train(mode: str, caps: dict[str, str]) -> tuple[str, str]:
    """(weights sha256, kernel level) of the worker's training, the mode on ("1") or off ("0"), ``caps`` set by
    hand beforehand. The environment is built from this process's without its own caps (conftest sets them)."""
    env = {k: v for k, v in os.environ.items() if k not in cpumode.CAPS}
    env = cpumode.environment({**env, **caps, cpumode.SWITCH: mode, "OMP_NUM_THREADS": "1"})
    out = subprocess.run([sys.executable, str(WORKER), "4"], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    digest, level = out.stdout.split()
    return digest, level


@pytest.mark.skipif(not cpumode.is_x86_64(), reason="the mode caps x86-64 kernels only (ARM: docs/running.md)")
def test_the_mode_gives_the_same_weights_at_any_kernel_level_and_without_it_they_differ():
    native, host = train("0", {})
    if host not in LOWER:
        pytest.skip(f"this CPU runs torch's {host} kernels: no lower level to cap to by hand")
    native_lower, lower = train("0", LOWER[host])
    assert lower != host and native_lower != native, "without the mode, the kernel level changes the weights"
    capped, level = train("1", {})
    capped_by_hand_lower, level_lower = train("1", LOWER[host])
    assert level == level_lower == "AVX2"
    assert capped == capped_by_hand_lower, "under the mode, the host's own level and a lower one train alike"


@pytest.mark.skipif(not cpumode.is_x86_64(), reason="the mode caps x86-64 kernels only (ARM: docs/running.md)")
def test_hitbench_caps_its_process_though_torch_was_imported_before_its_main():
    """As the console script does: hitvideo_bench (and with it torch) imported, then main()."""
    code = ("import sys; from hitvideo_bench.cli import main; main(sys.argv[1:]); import torch; "
            "print(torch.backends.cpu.get_cpu_capability())")
    env = {k: v for k, v in os.environ.items() if k not in (*cpumode.CAPS, cpumode.SWITCH)}
    out = subprocess.run([sys.executable, "-c", code, "ls", "metric"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0 and "torch already chose" not in out.stderr, out.stderr
    assert out.stdout.split()[-1] in ("AVX2", "DEFAULT")  # DEFAULT: a CPU without AVX2


def test_the_switch_is_1_or_0_and_off_leaves_the_environment_as_it_is(monkeypatch):
    monkeypatch.setattr(cpumode, "is_x86_64", lambda: True)
    assert cpumode.environment({"ATEN_CPU_CAPABILITY": "default"}) == {**cpumode.CAPS}
    off = {cpumode.SWITCH: "0", "ATEN_CPU_CAPABILITY": "default"}
    assert cpumode.environment(off) == off
    assert cpumode.environment({cpumode.SWITCH: "any-vendor"})["MKL_CBWR"] == "COMPATIBLE"
    with pytest.raises(BadInput, match=r"HITBENCH_REPRODUCIBLE_CPU='yes': allowed values are 1 \(.*\), any-vendor "
                                       r"\(.*\) and 0 \(the CPU's own kernels\)"):
        cpumode.environment({cpumode.SWITCH: "yes"})
    monkeypatch.setattr(cpumode, "is_x86_64", lambda: False)
    assert cpumode.environment({}) == {}


def test_native_cpu_turns_the_mode_off_for_the_processes_hitbench_starts(monkeypatch):
    from hitvideo_bench.cli import main

    monkeypatch.setenv(cpumode.SWITCH, "1")
    assert main(["run", "--native-cpu", str(Path(__file__).with_name("no-such-recipe.yaml"))]) == 2
    assert os.environ[cpumode.SWITCH] == "0"


def test_the_machine_names_the_cpu_its_kernel_level_caps_threads_and_the_lock():
    found = cpumode.machine()
    assert found["cpu"] and found["arch"] and found["threads"] == torch.get_num_threads()
    assert found["cpu_vendor"] == cpumode.cpu_vendor()
    assert found["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert found["lock_sha256"] == hashlib.sha256(cpumode.LOCK.read_bytes()).hexdigest()
    if cpumode.is_x86_64() and cpumode.enabled():  # this process was capped by conftest, before any kernel ran
        assert found["cpu_caps"] == cpumode.caps() and found["reproducible_cpu"]
        assert found["cpu_capability"] in ("AVX2", "DEFAULT")
        assert cpumode.not_in_force() is None or found["cpu_vendor"] != cpumode.INTEL
    assert cpumode.kernel_level(found).startswith(found["cpu_capability"] + " (")


@pytest.mark.skipif(not cpumode.is_x86_64(), reason="the mode caps x86-64 kernels only (ARM: docs/running.md)")
def test_any_vendor_gives_mkl_its_compatible_branch_so_its_matrix_products_round_otherwise():
    """The worker's training under ``any-vendor`` runs at AVX2 like the plain mode, but MKL's COMPATIBLE branch (the
    one MKL keeps on non-Intel CPUs too) gives other weights: the setting reaches MKL."""
    plain, level = train("1", {})
    any_vendor, level_any = train("any-vendor", {})
    assert level == level_any == "AVX2" and plain != any_vendor


def test_on_a_cpu_not_intels_the_mode_warns_of_mkl_and_tables_tell_the_vendors_apart(monkeypatch):
    """MKL keeps MKL_CBWR=AVX2 on Intel CPUs only: elsewhere hitbench says so (unless any-vendor), and a table over
    runs from Intel and AMD CPUs under the mode notes it; under any-vendor they count as one kernel level."""
    from hitvideo_bench.report.notes import kernel_notes

    monkeypatch.setattr(cpumode, "is_x86_64", lambda: True)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")  # the suite may run uncapped
    monkeypatch.setattr(cpumode, "cpu_vendor", lambda: "AuthenticAMD")
    monkeypatch.setenv(cpumode.SWITCH, "1")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert "on this AuthenticAMD CPU" in cpumode.not_in_force() and "any-vendor" in cpumode.not_in_force()
    monkeypatch.setenv(cpumode.SWITCH, "any-vendor")
    monkeypatch.setenv("MKL_CBWR", "COMPATIBLE")
    assert cpumode.not_in_force() is None
    monkeypatch.setattr(cpumode, "cpu_vendor", lambda: cpumode.INTEL)
    monkeypatch.setenv(cpumode.SWITCH, "1")
    monkeypatch.setenv("MKL_CBWR", "AVX2")
    assert cpumode.not_in_force() is None

    def machine(vendor, mkl="AVX2"):
        return {"machine": {"cpu_capability": "AVX2", "reproducible_cpu": True, "cpu_vendor": vendor,
                            "cpu_caps": {**cpumode.CAPS, "MKL_CBWR": mkl}}}

    before_vendors = {"cpu_capability": "AVX2", "reproducible_cpu": True}  # a manifest from before the vendor
    assert kernel_notes({"a": machine("GenuineIntel"), "b": {"machine": before_vendors}}) == []
    assert kernel_notes({"a": machine("GenuineIntel"), "b": machine("AuthenticAMD")}) == [
        "Runs computed with different CPU kernels, so their numbers can differ in float rounding besides what the "
        "recipe varies (docs/running.md): AVX2 (reproducible mode): a; AVX2 (reproducible mode, MKL's own branch "
        "on AuthenticAMD): b"]
    assert kernel_notes({"a": machine("GenuineIntel", "COMPATIBLE"), "b": machine("AuthenticAMD", "COMPATIBLE")}) == []
    assert len(kernel_notes({"a": machine("GenuineIntel", "COMPATIBLE"), "b": machine("GenuineIntel")})) == 1
