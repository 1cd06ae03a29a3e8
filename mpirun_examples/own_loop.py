"""Local SGD in your own loop: `mpirun -n 3 python mpirun_examples/own_loop.py --H 4` (or torchrun, --backend torch).

Your model, optimiser and loop, plus the lines marked `# ours`. Flags pick local (--H), post-local
(--switch-step), hierarchical (--Hb with --block-size) and SlowMo (--slowmo ALPHA BETA). --out saves each rank's model.
"""
import argparse
import os

import torch

from train import LocalSGD  # ours

p = argparse.ArgumentParser()
p.add_argument("--H", type=int, default=4)
p.add_argument("--Hb", type=int)
p.add_argument("--block-size", type=int)
p.add_argument("--switch-step", type=int)
p.add_argument("--slowmo", type=float, nargs=2, metavar=("ALPHA", "BETA"))
p.add_argument("--steps", type=int, default=40)
p.add_argument("--backend", choices=("mpi", "torch"), default="mpi")
p.add_argument("--out")
a = p.parse_args()
if a.backend == "torch":  # under torchrun: RANK, WORLD_SIZE, MASTER_ADDR come from the environment
    torch.distributed.init_process_group("gloo")
slowmo = dict(momentum_variant="slowmo", slow_lr=a.slowmo[0], slow_momentum=a.slowmo[1]) if a.slowmo else {}

torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(20, 32), torch.nn.ReLU(), torch.nn.Linear(32, 4))
opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
avg = LocalSGD(model, optimizer=opt, H=a.H, Hb=a.Hb, switch_step=a.switch_step, total_steps=a.steps,  # ours
               backend=a.backend, block_size=a.block_size, **slowmo)
g = torch.Generator().manual_seed(1 + avg.backend.rank)  # each rank sees its own data
w_true = torch.randn(20, 4, generator=torch.Generator().manual_seed(7))
for step in range(a.steps):
    x = torch.randn(32, 20, generator=g)
    loss = torch.nn.functional.cross_entropy(model(x), (x @ w_true).argmax(1))
    opt.zero_grad()
    loss.backward()
    avg.average_gradients()  # ours, post-local only: mini-batch steps before --switch-step average gradients
    opt.step()
    avg.step()  # ours
    if step in (0, a.steps - 1) and avg.backend.rank == 0:
        print(f"step {step}: loss {loss.item():.4f}", flush=True)
if a.out:
    os.makedirs(a.out, exist_ok=True)
    torch.save(model.state_dict(), os.path.join(a.out, f"rank{avg.backend.rank}.pt"))
