"""Do two towers that start identical and see identical inputs stay identical under the CLIP loss?

    .venv/bin/python benchmarks/symmetry_break.py [--steps 60] [--temperature 0.01]

The ``same-modality`` arm "shared init · identical views" (suites/same-modality.yaml): one
initialisation copied into both image towers (harness-tiny-cnn), both fed the same pixels. In exact
arithmetic the symmetric CLIP loss gives both towers the same gradient, so they would stay equal and
the gap would stay 0. This prints, over training with AdamW (the suite's lr, weight decay, betas),
the largest difference between the towers' parameters and between their embeddings of the batch:
float32 rounding makes the two gradients differ, and the trajectory moves away from the symmetric
state. 1 thread, seed 0, the shapes world (canonical captions, 2,000 training scenes).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--temperature", type=float, default=0.01)
    args = parser.parse_args(argv)
    import harness

    torch.manual_seed(0)
    torch.set_num_threads(1)
    enc = harness.create_encoder("same_modality", model="harness-tiny-cnn", shared_init=True, views="identical")
    pairs = harness.create_dataset("shapes", train_size=2000, eval_size=100, captions="canonical").train_pairs()
    loss = harness.create_loss("clip", temperature=args.temperature, learnable_temperature=False)
    opt = torch.optim.AdamW(enc.model.parameters(), lr=1e-3, weight_decay=0.1, betas=(0.9, 0.98), eps=1e-6)
    rng = np.random.default_rng(0)
    enc.model.train()
    print("step | max |param difference| | max |embedding difference| | centroid distance of the batch")
    for step in range(args.steps + 1):
        images, texts = pairs.get_batch(rng.integers(0, len(pairs), 64), rng)
        a = enc.encode_image(enc.preprocess_images(images, train=True))
        b = enc.encode_pair(enc.pair_inputs(images, texts, train=True))
        if step in (0, 1, 2, 5, 10, 20, 40, args.steps):
            params = max((p - q).abs().max().item() for p, q in zip(enc.model.visual.parameters(),
                                                                   enc.model.visual_pair.parameters()))
            x, y = F.normalize(a.detach(), dim=-1), F.normalize(b.detach(), dim=-1)
            print(f"{step} | {params:.3g} | {(a - b).abs().max().item():.3g} | {(x.mean(0) - y.mean(0)).norm().item():.3g}")
        if step == args.steps:
            break
        out = loss(F.normalize(a, dim=-1), F.normalize(b, dim=-1))
        total = sum(out.values()) if isinstance(out, dict) else out  # a loss returns its named terms
        opt.zero_grad()
        total.backward()
        opt.step()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
