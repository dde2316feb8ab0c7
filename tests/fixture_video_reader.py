"""Fixture for tests of the video-folder dataset's isolation: a reader whose native calls crash or hang on some files.

A module of its own, light to import: the dataset's isolated worker unpickles the reader, so imports this module,
in every fresh worker (after each crash).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from hitbench_builtin.datasets.video_folder import VideoReader

#: CPU seconds a fixture reader gives a call on a ``*hang*`` file before it counts as hung
FIXTURE_HANG_LIMIT_S = 2.0


class FixtureFaultyReader(VideoReader):
    """Fixture: PyAV's reader, except that at ``stage`` (``probe`` or ``decode``) a file whose name holds ``crash``
    kills its process with SIGSEGV, as a crash in libav would, and one whose name holds ``hang`` spins forever."""

    def __init__(self, stage: str = "probe"):
        self.stage = stage

    def _fault(self, path: Path, stage: str) -> None:
        if stage != self.stage:
            return
        if "crash" in path.name:
            os.kill(os.getpid(), signal.SIGSEGV)
        if "hang" in path.name:
            while True:  # at 100 % of a core, as a hung decoder
                pass

    def probe(self, path):
        self._fault(path, "probe")
        return super().probe(path)

    def decode(self, path, probe, wanted):
        self._fault(path, "decode")
        return super().decode(path, probe, wanted)

    def probe_limit(self, path):
        return FIXTURE_HANG_LIMIT_S if "hang" in path.name else super().probe_limit(path)

    def decode_limit(self, probe, wanted):
        return FIXTURE_HANG_LIMIT_S if self.stage == "decode" else super().decode_limit(probe, wanted)
