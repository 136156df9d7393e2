"""Binding-free shortcuts on the shapes world's composition probe, legacy against balanced items.

Prints a Markdown table: per world seed and design, the accuracy of rules that never bind a
colour to a shape, the raw-pixel linear probe and the binding-free probe exactly as the linear
probe's reference rows compute them (seed-0 split), and the raw-pixel probe's mean over splits
0-4 (the seed-0 number alone is one draw: its standard error at 990 items is about 0.022).

Rules (each item chooses between its block's two bindings; a tie counts half):

- ``reviewer``: binding 0 ("x a and y b") iff [colour x's pixel mass > colour y's] equals
  [shape a's mean object mass over the set > shape b's];
- ``colour mass``: binding 0 iff colour x's mass > colour y's, each block oriented the way that
  scores better on the other half of the set (cross-fitted);
- ``mass match``: binding 0 iff [x's mass > y's] equals [shape a's mass > shape b's] in the image;
- ``solid px``: as ``colour mass`` with the number of pixels a colour covers at alpha >= 1/2;
- ``rgb px``: as ``colour mass`` with the number of pixels within RGB distance 60 of the colour.

    PYTHONPATH=. .venv/bin/python benchmarks/composition_shortcuts.py --seeds 0 1 2 3
"""

from __future__ import annotations

import argparse
import importlib

import numpy as np

from harness.builtin.datasets.shapes import ShapesDataset
from harness.builtin.datasets.shapes.attributes import COLOURS
from harness.builtin.datasets.shapes.dataset import COMPOSITION
from harness.builtin.evaluations.linear_probe import LinearProbe, probe_accuracy
from harness.builtin.evaluations.references import pixel_features

composition = importlib.import_module("harness.builtin.datasets.shapes.composition")
render_module = importlib.import_module("harness.builtin.datasets.shapes.render")


def scenes_of(ds: ShapesDataset):
    """The composition set's scene table, drawn again from its random stream."""
    return composition.item_scenes(ds.world, ds._rng(COMPOSITION), ds.eval_size, ds.image_size, ds.composition)[0]


def credit(pred0: np.ndarray, tie: np.ndarray, binding: np.ndarray) -> np.ndarray:
    """Per item: 1 when the rule's binding is right, 1/2 on a tie, else 0."""
    return np.where(tie, 0.5, (pred0 == (binding == 0)).astype(float))


def best_oriented(stat_x: np.ndarray, stat_y: np.ndarray, binding: np.ndarray, block: np.ndarray) -> float:
    """"binding 0 iff stat_x > stat_y", each block oriented the way that scores better on the other
    half of the set (two-fold cross-fitting, like ``references.oracle_accuracy``; an orientation that
    scores the same both ways counts half)."""
    c = credit(stat_x > stat_y, stat_x == stat_y, binding)
    fold = np.random.default_rng(0).permutation(len(c)) % 2
    total = 0.0
    for f in (0, 1):
        for b in np.unique(block):
            train, test = (block == b) & (fold != f), (block == b) & (fold == f)
            lead = c[train].sum() - (1 - c[train]).sum()  # > 0: "as stated" wins on the other half
            kept, flipped = c[test].sum(), (1 - c[test]).sum()
            total += kept if lead > 0 else flipped if lead < 0 else 0.5 * (kept + flipped)
    return float(total / len(c))


def rules(ds: ShapesDataset, comp) -> dict[str, float]:
    world, feats = ds.world, comp.tags["binding_free_features"]
    C, S = world.num_colours, world.num_shapes
    blocks = composition.blocks_of(world)
    labels = np.asarray(comp.labels)
    block, binding = labels // 2, labels % 2
    (a, x), (b, y) = (np.array([blk[k] for blk in blocks])[block].T for k in range(2))
    rows = np.arange(len(labels))
    mx, my = feats[rows, x], feats[rows, y]
    ma, mb = feats[rows, C + a], feats[rows, C + b]
    present = feats[:, C + S + 2: C + S + 2 + S]
    mean_mass = feats[:, C:C + S].sum(axis=0) / np.maximum(1, present.sum(axis=0))  # per shape, per object
    big_a = mean_mass[a] > mean_mass[b]
    out = {
        "reviewer": float(np.mean(credit((mx > my) == big_a, mx == my, binding))),
        "colour mass": best_oriented(mx, my, binding, block),
        "mass match": float(np.mean(credit((mx > my) == (ma > mb), (mx == my) | (ma == mb), binding))),
    }
    scenes = scenes_of(ds)
    _, alpha = render_module.render(scenes, ds.image_size, return_alpha=True, equal_area=ds.composition == "balanced")
    solid = (alpha >= 0.5).sum(axis=(2, 3))  # (N, 2) per object
    sx = np.where(scenes.colour[:, 0] == x, solid[:, 0], 0) + np.where(scenes.colour[:, 1] == x, solid[:, 1], 0)
    sy = np.where(scenes.colour[:, 0] == y, solid[:, 0], 0) + np.where(scenes.colour[:, 1] == y, solid[:, 1], 0)
    out["solid px"] = best_oriented(sx, sy, binding, block)
    images = np.asarray(comp.images).astype(np.int64)
    palette = np.array([c.rgb for c in COLOURS])
    near = [((images - palette[c][:, None, None, :]) ** 2).sum(axis=-1) <= 60**2 for c in (x, y)]
    counts = [n.sum(axis=(1, 2)) for n in near]
    px_x = np.array([counts[0][i] for i in rows])
    px_y = np.array([counts[1][i] for i in rows])
    out["rgb px"] = best_oriented(px_x, px_y, binding, block)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3])
    parser.add_argument("--eval-size", type=int, default=1000)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    probe = LinearProbe()
    header = ["seed", "design", "items", "reviewer", "colour mass", "mass match", "solid px", "rgb px",
              "raw pixels", "raw pixels (splits 0-4)", "binding-free"]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for seed in args.seeds:
        for design in ("legacy", "balanced"):
            ds = ShapesDataset(seed=seed, train_size=1, eval_size=args.eval_size, composition=design)
            comp = ds._composition()
            labels = np.asarray(comp.labels)
            r = rules(ds, comp)
            pixels = probe._pixel_probe(comp, labels)
            feats = pixel_features(comp.images)
            splits = np.mean([probe_accuracy(feats, labels, 0.5, 1.0, 1000, s, comp.tags["candidates"], threads=1)
                              for s in range(5)])
            free = probe._binding_free_probe(comp, labels)
            cells = [seed, design, len(labels), *(f"{r[k]:.3f}" for k in header[3:8]),
                     f"{pixels:.3f}", f"{splits:.3f}", f"{free:.3f}"]
            print("| " + " | ".join(map(str, cells)) + " |", flush=True)


if __name__ == "__main__":
    main()
