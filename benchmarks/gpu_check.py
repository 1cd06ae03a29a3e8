"""The Python parts of benchmarks/gpu_check.sh: ResNet-20 step times on the GPU, and LocalSGD on CUDA tensors.

    python benchmarks/gpu_check.py cuda                      # exit 0 and one line when torch sees a CUDA device
    python benchmarks/gpu_check.py steps --out DIR           # forward+backward of ResNet-20 at batch 32..1024
    torchrun --nproc-per-node N benchmarks/gpu_check.py averager --out DIR   # LocalSGD, backend "torch", CUDA
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

#: The paper's measured single-GPU seconds per iteration of ResNet-20 on CIFAR-10 (forward + backward), by batch.
PAPER = {32: (0.058, 0.028), 64: (0.100, 0.030), 128: (0.175, 0.034), 256: (0.323, 0.043), 512: (0.737, 0.073),
         1024: (1.469, 0.124)}


def _cuda(_: argparse.Namespace) -> int:
    if not torch.cuda.is_available():
        print(f"no CUDA device: torch {torch.__version__} reports torch.cuda.is_available() False "
              f"(built for CUDA {torch.version.cuda})")
        return 1
    print(f"CUDA device: {torch.cuda.get_device_name(0)} x {torch.cuda.device_count()}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}")
    return 0


def _steps(a: argparse.Namespace) -> int:
    """ResNet-20 (width 16) on 3 x 32 x 32 inputs: median seconds of one forward + backward + SGD step."""
    from train.models import build_model
    dev = torch.device(a.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = build_model("resnet20", input_shape=(3, 32, 32), num_classes=10, width=16).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, nesterov=True)
    rows = []
    for batch in a.batches:
        x = torch.randn(batch, 3, 32, 32, device=dev)
        y = torch.randint(0, 10, (batch,), device=dev)
        times = []
        for i in range(a.warmup + a.iters):
            sync()
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            sync()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
        titan, v100 = PAPER.get(batch, (None, None))
        rows.append({"batch": batch, "seconds_per_iter": statistics.median(times), "min_s": min(times),
                     "max_s": max(times), "iters": a.iters, "titan_xp_s": titan, "v100_s": v100,
                     "device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
                     "torch": torch.__version__})
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "resnet20_steps.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    lines = [(f"ResNet-20 forward+backward+step on {rows[0]['device']} (median of {a.iters} after {a.warmup}), "
             f"seconds per iteration, beside the paper's:"), "", "| batch | this GPU | Titan Xp | Tesla V100 |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r['batch']} | {r['seconds_per_iter']:.4f} | {r['titan_xp_s'] or '-'} | {r['v100_s'] or '-'} |"
              for r in rows]
    (out / "resnet20_steps.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))
    return 0


def _averager(a: argparse.Namespace) -> int:
    """Under torchrun: LocalSGD with backend "torch" on a CUDA model (NCCL alone, gloo on CUDA tensors otherwise);
    after the final sync every rank must hold bitwise the same parameters."""
    import torch.distributed as dist

    from train import LocalSGD
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = a.device == "cuda"
    backend = "nccl" if world == 1 and cuda else "gloo"
    dist.init_process_group(backend)
    rank = dist.get_rank()
    dev = torch.device("cuda", rank % torch.cuda.device_count()) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 10)).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = 40
    avg = LocalSGD(model, optimizer=opt, H=4, total_steps=steps, backend="torch")
    g = torch.Generator(device=dev).manual_seed(1 + rank)
    for _ in range(steps):
        x = torch.randn(32, 64, device=dev, generator=g)
        loss = torch.nn.functional.cross_entropy(model(x), x[:, :10].argmax(1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        avg.step()
    if cuda:
        torch.cuda.synchronize(dev)
    digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in model.parameters())).digest()
    mine = torch.tensor(list(digest), dtype=torch.uint8, device=dev)
    digests = [torch.empty_like(mine) for _ in range(world)]
    dist.all_gather(digests, mine)  # a tensor collective: all_gather_object's pickling left rank 1 aborting at exit
    ok = all(torch.equal(d, digests[0]) for d in digests)
    if rank == 0:
        out = Path(a.out)
        out.mkdir(parents=True, exist_ok=True)
        name = torch.cuda.get_device_name(dev) if cuda else "cpu"
        rec = {"world_size": world, "backend": backend, "device": name, "steps": steps,
               "identical": ok, "final_loss": float(loss.detach())}
        (out / f"averager_torch_{world}.json").write_text(json.dumps(rec, indent=2) + "\n", encoding="utf-8")
        print(f"LocalSGD backend torch ({backend}) on {name}, {world} rank(s): parameters "
              f"{'bitwise identical' if ok else 'DIFFERENT'} after {steps} steps")
    dist.destroy_process_group()
    # leave without the interpreter's teardown: after a correct result, about one run in five (torch 2.13, gloo,
    # 2 CPU ranks; with or without destroy_process_group or a barrier) had rank 1 abort while exiting
    # ("terminate called without an active exception"), which torchrun reports as the job failing
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0 if ok else 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("cuda").set_defaults(fn=_cuda)
    st = sub.add_parser("steps")
    st.add_argument("--out", required=True)
    st.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[32, 64, 128, 256, 512, 1024])
    st.add_argument("--warmup", type=int, default=5)
    st.add_argument("--iters", type=int, default=20)
    st.add_argument("--device", default="cuda", help="cuda (cpu: to try the script where there is no GPU)")
    st.set_defaults(fn=_steps)
    av = sub.add_parser("averager")
    av.add_argument("--out", required=True)
    av.add_argument("--device", default="cuda", help="cuda (cpu: to try the script where there is no GPU)")
    av.set_defaults(fn=_averager)
    a = p.parse_args(argv)
    return int(a.fn(a))


if __name__ == "__main__":
    sys.exit(main())
