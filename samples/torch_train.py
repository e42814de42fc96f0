#!/usr/bin/env python3
"""Train a small transformer block with AdamW on the GPU, deterministically.

The PyTorch job the driver engine is tested with (tests/gpu): NVIDIA's
runtime, cuBLAS and PyTorch's caching allocator, none of which the
interposer can serve. A pre-norm transformer encoder layer and a linear head
learn a fixed random teacher on synthetic sequences; data, model and
optimizer state all live on the device. Deterministic algorithms are forced
(and cuBLAS's workspace fixed), so the same arguments always print the same
lines on the same GPU model: a run saved and restored mid-way must print what
an uninterrupted one prints.

--device-mib N keeps N MiB of device "ballast", rewritten a little every step
and folded into the checksum, to make checkpoints of any size.

The last line is `checksum: <sha256>` of the final parameters, the optimizer
state and the ballast.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time

# Before torch initialises cuBLAS: deterministic cuBLAS needs a fixed workspace.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # after the environment above
from torch import nn


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--print-every", type=int, default=10)
    ap.add_argument("--sleep-per-step", type=float, default=0.0)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--seq", type=int, default=32)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--device-mib", type=int, default=0)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--device", default="cuda")
    ap.add_argument(
        "--report-time",
        action="store_true",
        help="print the median step time on stderr at the end (benchmarks)",
    )
    return ap.parse_args(argv)


class Model(nn.Module):
    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.block = nn.TransformerEncoderLayer(
            d_model, nhead=4, dim_feedforward=4 * d_model, dropout=0.0, batch_first=True,
            norm_first=True,
        )  # fmt: skip
        self.head = nn.Linear(d_model, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(x)).squeeze(-1)


def digest(h: hashlib._Hash, t: torch.Tensor) -> None:
    h.update(t.detach().contiguous().cpu().numpy().tobytes())


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.manual_seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    dev = torch.device(args.device)

    model = Model(args.d_model).to(dev)
    teacher = Model(args.d_model).to(dev)
    for p in teacher.parameters():
        p.requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
    gen = torch.Generator(device=dev).manual_seed(args.seed + 1)
    ballast = torch.zeros(args.device_mib * (1 << 18), dtype=torch.float32, device=dev)
    if ballast.numel():
        ballast.copy_(torch.rand(ballast.numel(), generator=gen, device=dev))

    print(f"device: {torch.cuda.get_device_name(dev) if dev.type == 'cuda' else dev}", flush=True)
    step_times: list[float] = []
    for step in range(1, args.steps + 1):
        t0 = time.perf_counter()
        x = torch.randn(args.batch, args.seq, args.d_model, generator=gen, device=dev)
        with torch.no_grad():
            y = teacher(x)
        loss = nn.functional.mse_loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ballast.numel():
            i = (step * 4099) % ballast.numel()
            ballast[i : i + 1024].mul_(0.5).add_(float(step))
        if step % args.print_every == 0 or step == args.steps:
            # A synchronous read of the loss, as training loops do for logging.
            print(f"step {step} loss {loss.item():.6f}", flush=True)
        step_times.append(time.perf_counter() - t0)
        if args.sleep_per_step:
            time.sleep(args.sleep_per_step)

    if args.report_time and len(step_times) > 10:
        warm = sorted(step_times[10:])  # the first steps pay for kernel selection and caches
        print(f"step time: {warm[len(warm) // 2] * 1e3:.4f} ms", file=sys.stderr, flush=True)
    h = hashlib.sha256()
    for p in model.parameters():
        digest(h, p)
    for state in opt.state.values():
        for v in state.values():
            if isinstance(v, torch.Tensor):
                digest(h, v)
    if ballast.numel():
        digest(h, ballast)
    print(f"checksum: {h.hexdigest()}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
