"""Session 9, CPU: the position embedding's first moment that broke the orthonormalization (issue 13's NaN).

Trains gpt-85m on the demo's recipe and batches (seed 1, lr 3e-3, torch path) for 20 steps at r0/b8/g0, takes
wpe's first moment (non-zero rows only where the 64-byte windows reach) and runs the randomized SVD's two
subspace iterations (72 columns) through the old orthonormalization (nudge on the leading diagonal, written
out here) and the current ``orthonormalize_batched``.
Run: python results/gpu-h200-2026-12-04-s9/wpe_orth_probe.py
"""

import torch

from client.compression import MangoAdamW, convert
from client.compression.lowrank import init_q, orthonormalize_batched
from client.protocol import CompressionSetting
from demo.args import DemoArgs
from demo.runs import lr_at
from envs.data import load_corpus
from envs.models import build_model


def old_orthonormalize(x: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Session 6-8's CholeskyQR2: a 1e-7 nudge on the leading r x r diagonal; returns the Cholesky infos."""
    m, r = x.shape[-2:]
    y = x.reshape(-1, m, r).to(torch.float64, copy=True)
    scale = y.square().sum(dim=-2).amax(dim=-1).sqrt()
    y[:, :r, :] += torch.diag_embed((1e-7 * scale + 1e-30).unsqueeze(-1).expand(-1, r))
    infos = []
    for _ in range(2):
        chol, info = torch.linalg.cholesky_ex(y.mT @ y)
        infos.append(int(info.max()))
        y = torch.linalg.solve_triangular(chol, y.mT, upper=False).mT
    return y.float().reshape(x.shape), infos


torch.set_num_threads(2)
seed = 1
args = DemoArgs(model="gpt-85m", seed=seed, batch_size=16, seq_len=64, lr=3e-3, warmup_steps=40)
corpus = load_corpus(args.corpus_bytes)
model = build_model("gpt-85m", seed)
params = [p for p in model.parameters() if p.requires_grad]
start = CompressionSetting.parse("r0/b8/g0")
opt = MangoAdamW(params, lr=args.lr, weight_decay=0.01, setting=start, seed=seed)
gen = torch.Generator().manual_seed(seed + 1)
for step in range(20):
    for g in opt.param_groups:
        g["lr"] = lr_at(args, step)
    x, y = corpus.get_batch("train", 16, 64, gen)
    loss = model.loss(x, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
wpe = model.wpe.weight
a = convert._values([opt.state[wpe]], "m", wpe)  # (1, 256, 768)
sv = torch.linalg.svdvals(a[0].double())
print(
    f"wpe first moment: non-zero rows {int((a[0].abs().amax(dim=1) > 0).sum())} of 256, rank-64 gap "
    f"sigma64 {sv[63]:.3g} / sigma65 {sv[64]:.3g}"
)
for name in ("old (leading diagonal)", "current (fixed random)"):
    for start in range(3):
        q = init_q(768, 72, torch.Generator().manual_seed(start), orthonormal=False).unsqueeze(0)
        for it in range(2):
            x = a @ q
            if name.startswith("old"):
                pk, infos = old_orthonormalize(x)
            else:
                pk, infos = orthonormalize_batched(x), []
            orth = (pk[0].T @ pk[0] - torch.eye(72)).abs().max().item()
            span = (x - pk @ (pk.mT @ x)).abs().max().item() / x.abs().max().item()
            print(
                f"{name}: start {start} iteration {it}: finite {bool(torch.isfinite(pk).all())}, "
                f"orthogonality error {orth:.2g}, relative span error {span:.2g}"
                + (f", Cholesky infos {infos}" if infos else "")
            )
            q = a.transpose(1, 2) @ pk
