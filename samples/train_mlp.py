#!/usr/bin/env python3
"""Train a small MLP with SGD, every step on the device.

A two-layer perceptron (in 16, relu hidden layer, out 8) learns a fixed random
teacher from synthetic data. The forward pass, the loss and its gradient, the
backward pass and the SGD update all run as kernels (samples/kernels/mlp.cu);
the host only queues them, and reads a loss back when it prints one. The loss
is reduced on the device in a fixed order, so the same arguments always print
the same lines.

--device-mib N adds N MiB of device "ballast", filled by a kernel, touched
every step and folded into the checksum, to make checkpoints of any size.
--threads N trains N independent replicas on N host threads, each on its own
stream; their losses are printed after they finish.

The last line is `checksum: <sha256>` of the final parameters (and of the
ballast's digest).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
import time
from dataclasses import dataclass, field

import cudrv
import numpy as np
from cuda.bindings import driver as cu
from cudrv import f32, i32, ptr, u32, u64

IN, OUT = 16, 8
NBATCHES = 8  # the data set holds this many batches, used in turn
BLOCK = 128
F32 = 4

BALLAST_FILL_WORDS = 1 << 14  # per thread: contiguous runs are fast on a CPU
BALLAST_TOUCH_WORDS = 1024  # words rewritten per step
BALLAST_DIGEST_WORDS = 1 << 16  # words per digest chunk

KERNELS = (
    "matmul",
    "bias_relu",
    "bias_add",
    "mse_grad",
    "sum_scaled",
    "col_sum",
    "relu_backward",
    "sgd",
    "ballast_fill",
    "ballast_touch",
    "ballast_digest",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument(
        "--device-mib", type=int, default=0, help="extra device memory to carry (replica 0 owns it)"
    )
    ap.add_argument("--threads", type=int, default=1, help="independent replicas, one thread each")
    ap.add_argument("--print-every", type=int, default=10)
    ap.add_argument("--sleep-per-step", type=float, default=0.0, metavar="SECONDS")
    args = ap.parse_args(argv)
    for name in ("steps", "hidden", "batch", "threads", "print_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.device_mib < 0 or args.sleep_per_step < 0:
        ap.error("--device-mib and --sleep-per-step cannot be negative")
    return args


class Ballast:
    """Device memory that only exists to be checkpointed and checked."""

    def __init__(self, fns: dict[str, cu.CUfunction], mib: int, seed: int, stream: cu.CUstream):
        self.fns = fns
        self.words = mib * (1 << 20) // 4
        self.dptr = cudrv.alloc(self.words * 4)
        fill_threads = cudrv.blocks_for(self.words, BALLAST_FILL_WORDS)
        cudrv.launch(
            fns["ballast_fill"],
            cudrv.blocks_for(fill_threads, BLOCK),
            BLOCK,
            ptr(self.dptr),
            u64(self.words),
            u64(BALLAST_FILL_WORDS),
            u32(seed & 0xFFFFFFFF),
            stream=stream,
        )
        self.count = min(BALLAST_TOUCH_WORDS, self.words)
        self.stride = self.words // self.count

    def touch(self, step: int, stream: cu.CUstream) -> None:
        offset = (step * 2654435761) % self.stride
        cudrv.launch(
            self.fns["ballast_touch"],
            cudrv.blocks_for(self.count, BLOCK),
            BLOCK,
            ptr(self.dptr),
            u64(self.stride),
            u64(offset),
            u32(self.count),
            u32(step),
            stream=stream,
        )

    def digest(self, stream: cu.CUstream) -> bytes:
        nchunks = cudrv.blocks_for(self.words, BALLAST_DIGEST_WORDS)
        out = cudrv.alloc(nchunks * 8)
        cudrv.launch(
            self.fns["ballast_digest"],
            cudrv.blocks_for(nchunks, BLOCK),
            BLOCK,
            ptr(self.dptr),
            u64(self.words),
            u64(BALLAST_DIGEST_WORDS),
            ptr(out),
            u64(nchunks),
            stream=stream,
        )
        host = np.empty(nchunks, dtype=np.uint64)
        cudrv.dtoh(host, out, host.nbytes, stream)
        cudrv.free(out)
        return hashlib.sha256(host.tobytes()).digest()


@dataclass
class Replica:
    """One model, its data and its buffers, trained on its own stream."""

    index: int
    args: argparse.Namespace
    fns: dict[str, cu.CUfunction]
    lines: list[str] = field(default_factory=list)

    def setup(self, stream: cu.CUstream) -> None:
        a = self.args
        b, h = a.batch, a.hidden
        self.stream = stream
        rng = np.random.default_rng([a.seed, self.index])
        x = rng.standard_normal((NBATCHES * b, IN), dtype=np.float32)
        teacher = rng.standard_normal((IN, OUT)).astype(np.float32) / np.float32(np.sqrt(IN))
        noise = rng.standard_normal((NBATCHES * b, OUT)).astype(np.float32)
        t = (np.tanh(x @ teacher) + np.float32(0.05) * noise).astype(np.float32)
        w1 = rng.standard_normal((IN, h)).astype(np.float32) * np.float32(np.sqrt(2.0 / IN))
        w2 = rng.standard_normal((h, OUT)).astype(np.float32) * np.float32(np.sqrt(1.0 / h))
        params = np.concatenate(
            [w1.ravel(), np.zeros(h, np.float32), w2.ravel(), np.zeros(OUT, np.float32)]
        )
        self.nparams = params.size
        # Parameters and gradients share one layout: W1 | b1 | W2 | b2.
        self.offsets = np.cumsum([0, IN * h, h, h * OUT]) * F32

        self.d_x = cudrv.alloc(x.nbytes)
        self.d_t = cudrv.alloc(t.nbytes)
        self.d_params = cudrv.alloc(params.nbytes)
        self.d_grads = cudrv.alloc(params.nbytes)
        self.d_z1 = cudrv.alloc(b * h * F32)
        self.d_h1 = cudrv.alloc(b * h * F32)
        self.d_y = cudrv.alloc(b * OUT * F32)
        self.d_dy = cudrv.alloc(b * OUT * F32)
        self.d_dh = cudrv.alloc(b * h * F32)
        self.d_rowloss = cudrv.alloc(b * F32)
        self.d_losses = cudrv.alloc(a.steps * F32)
        cudrv.htod(self.d_x, x, x.nbytes, stream)
        cudrv.htod(self.d_t, t, t.nbytes, stream)
        cudrv.htod(self.d_params, params, params.nbytes, stream)
        self.ballast: Ballast | None = None
        if self.index == 0 and a.device_mib > 0:
            self.ballast = Ballast(self.fns, a.device_mib, a.seed, stream)

    def _launch(self, name: str, threads: int, *kargs: cudrv.KernelArg) -> None:
        cudrv.launch(
            self.fns[name], cudrv.blocks_for(threads, BLOCK), BLOCK, *kargs, stream=self.stream
        )

    def step(self, i: int) -> None:
        a = self.args
        b, h = a.batch, a.hidden
        w1, b1, w2, b2 = (self.d_params + int(o) for o in self.offsets)
        dw1, db1, dw2, db2 = (self.d_grads + int(o) for o in self.offsets)
        xb = self.d_x + (i % NBATCHES) * b * IN * F32
        tb = self.d_t + (i % NBATCHES) * b * OUT * F32
        z1, h1, y, dy, dh = self.d_z1, self.d_h1, self.d_y, self.d_dy, self.d_dh
        L = self._launch
        # Forward.
        L("matmul", b * h, ptr(xb), ptr(w1), ptr(z1), i32(b), i32(h), i32(IN), i32(0), i32(0))
        L("bias_relu", b * h, ptr(z1), ptr(b1), ptr(h1), i32(b), i32(h))
        L("matmul", b * OUT, ptr(h1), ptr(w2), ptr(y), i32(b), i32(OUT), i32(h), i32(0), i32(0))
        L("bias_add", b * OUT, ptr(y), ptr(b2), i32(b), i32(OUT))
        # Loss and its gradient; the loss of step i lands in losses[i].
        L("mse_grad", b, ptr(y), ptr(tb), ptr(dy), ptr(self.d_rowloss), i32(b), i32(OUT))
        loss_i = self.d_losses + i * F32
        L("sum_scaled", 1, ptr(self.d_rowloss), ptr(loss_i), i32(b), f32(1.0 / (b * OUT)))
        # Backward: dW2 = h1^T dy, db2 = sum(dy), dh = dy W2^T * relu'(h1),
        # dW1 = x^T dh, db1 = sum(dh).
        L("matmul", h * OUT, ptr(h1), ptr(dy), ptr(dw2), i32(h), i32(OUT), i32(b), i32(1), i32(0))
        L("col_sum", OUT, ptr(dy), ptr(db2), i32(b), i32(OUT))
        L("matmul", b * h, ptr(dy), ptr(w2), ptr(dh), i32(b), i32(h), i32(OUT), i32(0), i32(1))
        L("relu_backward", b * h, ptr(dh), ptr(h1), i32(b * h))
        L("matmul", IN * h, ptr(xb), ptr(dh), ptr(dw1), i32(IN), i32(h), i32(b), i32(1), i32(0))
        L("col_sum", h, ptr(dh), ptr(db1), i32(b), i32(h))
        # Update.
        L("sgd", self.nparams, ptr(self.d_params), ptr(self.d_grads), f32(a.lr), i32(self.nparams))
        if self.ballast is not None:
            self.ballast.touch(i, self.stream)

    def loss(self, i: int) -> float:
        host = np.empty(1, dtype=np.float32)
        cudrv.dtoh(host, self.d_losses + i * F32, F32, self.stream)
        return float(host[0])

    def train(self, live: bool) -> None:
        a = self.args
        prefix = "" if live else f"thread {self.index} "
        for i in range(a.steps):
            self.step(i)
            if i % a.print_every == 0 or i == a.steps - 1:
                line = f"{prefix}step {i} loss {self.loss(i):.6f}"
                if live:
                    print(line, flush=True)
                else:
                    self.lines.append(line)
            if a.sleep_per_step:
                time.sleep(a.sleep_per_step)

    def params_bytes(self) -> bytes:
        host = np.empty(self.nparams, dtype=np.float32)
        cudrv.dtoh(host, self.d_params, host.nbytes, self.stream)
        return host.tobytes()


def run_replica(rep: Replica, ctx: cu.CUcontext, live: bool, errors: list[BaseException]) -> None:
    try:
        cudrv.use(ctx)
        stream = cudrv.stream_create()
        rep.setup(stream)
        rep.train(live)
        cudrv.call(cu.cuStreamSynchronize, stream)
    except BaseException as e:  # handed to the main thread
        errors.append(e)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    ctx = cudrv.init()
    mod = cudrv.load_module("mlp")
    fns = cudrv.functions(mod, KERNELS)
    replicas = [Replica(r, args, fns) for r in range(args.threads)]
    errors: list[BaseException] = []
    if args.threads == 1:
        run_replica(replicas[0], ctx, True, errors)
    else:
        threads = [
            threading.Thread(
                target=run_replica, args=(r, ctx, False, errors), name=f"replica-{r.index}"
            )
            for r in replicas
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    for r in replicas:
        for line in r.lines:
            print(line)
    digest = hashlib.sha256()
    for r in replicas:
        digest.update(r.params_bytes())
    ballast = replicas[0].ballast
    if ballast is not None:
        digest.update(ballast.digest(replicas[0].stream))
    print(f"checksum: {digest.hexdigest()}", flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (cudrv.CudaError, OSError, RuntimeError) as e:
        print(f"train_mlp: {e}", file=sys.stderr)
        sys.exit(1)
