"""What codec isolation costs: a codec's clips compressed in the run's process (batches, as before isolation) against
clip by clip in an isolated worker (as the reconstruction stage now does), on the same clips.

    python benchmarks/bench_isolation.py [--codec x264] [--set crf=42 | --set target_bpp=0.06] [--clips 8]
        [--repeats 3]

Prints, per repeat (the two ways alternate), the wall time of each way, the worker's start (the first includes
starting the fork server) and the overhead of isolation in % of the in-process time; and the CPU time of each way
(this process, plus the worker's for the isolated way), which a loaded machine does not inflate.

    python benchmarks/bench_isolation.py --video-folder examples/clips [--repeats 3]

The same for the video-folder dataset's reading: every file probed and every clip decoded (the tiny preset, as
many clips a file as the real-video recipe cuts), in this process (``isolated: false``) against in the shared
worker; the first isolated repeat includes the worker's start, the later ones reuse it, as a run's datasets do.
"""

from __future__ import annotations

import argparse
import time

import torch
import yaml

import hitvideo_bench as hb
from hitvideo_bench.isolation import IsolatedWorker, cpu_seconds, shared_worker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--codec", default="x264")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--clips", type=int, default=8)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--video-folder", metavar="ROOT", help="measure the video-folder dataset's reading instead")
    args = parser.parse_args()
    if args.video_folder:
        return bench_video_folder(args.video_folder, args.repeats)
    config = {k: yaml.safe_load(v) for k, v in (kv.split("=", 1) for kv in args.sets)}
    codec = hb.get_catalog().create("codec", args.codec, preset="tiny", overrides=config)
    data = hb.create_dataset("synthetic-shapes", preset="tiny", split="val")
    video = torch.stack([data[i]["video"] for i in range(args.clips)])
    limit = codec.time_limit(*video.shape[2:])
    print(f"{args.codec} {config}: {args.clips} clips of {tuple(video.shape[1:])}, time limit {limit:.0f} s a clip")
    for repeat in range(args.repeats):
        start, cpu = time.perf_counter(), time.process_time()
        direct = [codec.compress(video[i:i + args.batch]) for i in range(0, args.clips, args.batch)]
        in_process, in_process_cpu = time.perf_counter() - start, time.process_time() - cpu
        start, cpu = time.perf_counter(), time.process_time()
        with IsolatedWorker(codec) as worker:
            worker.start()
            started = time.perf_counter() - start
            isolated = [worker.call("compress", video[i:i + 1], limit_s=limit) for i in range(args.clips)]
            worker_cpu = cpu_seconds(worker.pid) or 0.0
        total, total_cpu = time.perf_counter() - start, time.process_time() - cpu + worker_cpu
        same = torch.equal(torch.cat([c.bits for c in direct]), torch.cat([c.bits for c in isolated]))
        print(f"repeat {repeat}: in-process {in_process:.2f} s; isolated {total:.2f} s (worker start {started:.2f} s); "
              f"overhead {100 * (total - in_process) / in_process:+.1f} % (without the start "
              f"{100 * (total - started - in_process) / in_process:+.1f} %); CPU in-process {in_process_cpu:.2f} s, "
              f"isolated {total_cpu:.2f} s ({100 * (total_cpu - in_process_cpu) / in_process_cpu:+.1f} %); "
              f"same bits: {same}", flush=True)


def bench_video_folder(root: str, repeats: int) -> None:
    """Probe and decode every clip of ``root`` in this process and in the shared isolated worker, alternately (torch
    on one thread: its idle threads' spinning in the crop and resize otherwise blurs the CPU times)."""
    torch.set_num_threads(1)
    options = dict(preset="tiny", split="all", root=root, split_rule="all", max_clips_per_file=14, clip_stride=0.25)
    for repeat in range(repeats):
        for isolated in (False, True):
            data = hb.create_dataset("video-folder", isolated=isolated, **options)
            worker = shared_worker(data.reader) if isolated else None
            worker_before = (cpu_seconds(worker.pid) or 0.0) if worker and worker.pid else 0.0
            start, cpu = time.perf_counter(), time.process_time()
            clips = [data[i]["video"] for i in range(len(data))]
            worker_cpu = (cpu_seconds(worker.pid) or 0.0) - worker_before if worker else 0.0
            print(f"repeat {repeat} {'isolated  ' if isolated else 'in-process'}: {len(clips)} clips of "
                  f"{len(data.files)} files, wall {time.perf_counter() - start:.2f} s, CPU "
                  f"{time.process_time() - cpu + worker_cpu:.3f} s (the worker's {worker_cpu:.3f} s)", flush=True)


if __name__ == "__main__":
    main()
