"""A short training on one thread; prints the sha256 of the trained weights and torch's kernel level.

tests/test_cpu_mode.py starts it with the environment the CPU mode gives (``cpumode.environment``) or without;
it imports torch alone, so that a run costs little more than torch's import.

The model uses the kernels whose rounding depends on the instruction set: oneDNN's 3D convolutions, MKL's
matrix products, ATen's vectorised element-wise ops and reductions, and Adam.
"""

import hashlib
import sys

import torch


def main(steps: int) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv3d(3, 8, 3, padding=1), torch.nn.GELU(), torch.nn.Conv3d(8, 8, 3, stride=2, padding=1),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 8 * 8, 64), torch.nn.LayerNorm(64), torch.nn.SiLU(),
        torch.nn.Linear(64, 3 * 8 * 16 * 16), torch.nn.Unflatten(1, (3, 8, 16, 16)))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    videos = torch.rand(steps, 4, 3, 8, 16, 16, generator=torch.Generator().manual_seed(1))
    for video in videos:
        loss = torch.nn.functional.mse_loss(model(video), video)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + tensor.detach().contiguous().numpy().tobytes())
    print(digest.hexdigest(), torch.backends.cpu.get_cpu_capability())


if __name__ == "__main__":
    main(int(sys.argv[1]))
