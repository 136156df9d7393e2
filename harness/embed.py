"""Embed every evaluation set once per job; evaluations then work from these embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from harness.precision import autocast
from harness.types import EmbeddedSet, EvalSet, RetrievalSet


@torch.no_grad()
def embed_images(encoder, images, device, batch_size: int, precision: str = "fp32", pair: bool = False) -> torch.Tensor:
    """Normalised float32 CPU embeddings of an ImageBatch (the pair tower's when ``pair``)."""
    out = []
    for start in range(0, len(images), batch_size):
        chunk = images[start : start + batch_size]
        with autocast(precision, device):
            if pair:
                x = encoder.pair_inputs(chunk, [""] * len(chunk), train=False).to(device)
                f = encoder.encode_pair(x)
            else:
                x = encoder.preprocess_images(chunk, train=False).to(device)
                f = encoder.encode_image(x)
        out.append(F.normalize(f.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


@torch.no_grad()
def embed_texts(encoder, texts: Sequence[str], device, batch_size: int, precision: str = "fp32") -> torch.Tensor:
    """Normalised float32 CPU embeddings of texts through the text tower."""
    out = []
    texts = list(texts)
    for start in range(0, len(texts), batch_size):
        tokens = encoder.tokenize(texts[start : start + batch_size]).to(device)
        with autocast(precision, device):
            f = encoder.encode_pair(tokens)
        out.append(F.normalize(f.float(), dim=-1).cpu())
    return torch.cat(out) if out else torch.zeros(0, 0)


def embed_sets(encoder, sets: list[EvalSet], device, batch_size: int, precision: str = "fp32") -> list[EmbeddedSet]:
    """Each set's images once; for retrieval sets also the pair side (captions, or the second view)."""
    encoder.model.eval()
    embedded = []
    by_identity: dict[int, torch.Tensor] = {}  # sets that share one image array are embedded once
    for record in sets:
        key = id(record.images)
        if key not in by_identity:
            by_identity[key] = embed_images(encoder, record.images, device, batch_size, precision)
        image_emb = by_identity[key]
        pair_emb = pair_index = None
        if isinstance(record, RetrievalSet):
            if encoder.pair_modality == "text":
                flat = [c for caps in record.captions for c in caps]
                pair_index = torch.tensor([i for i, caps in enumerate(record.captions) for _ in caps], dtype=torch.long)
                pair_emb = embed_texts(encoder, flat, device, batch_size, precision)
            else:
                pair_emb = embed_images(encoder, record.images, device, batch_size, precision, pair=True)
                pair_index = torch.arange(len(record.images))
        embedded.append(EmbeddedSet(record=record, image_emb=image_emb, pair_emb=pair_emb, pair_image_index=pair_index))
    return embedded


def save_embeddings(sets: list[EmbeddedSet], directory: Path) -> None:
    """One ``<set>.npz`` per set: image_emb, and pair_emb + pair_image_index for paired sets."""
    directory.mkdir(parents=True, exist_ok=True)
    for s in sets:
        arrays = {"image_emb": s.image_emb.numpy()}
        if s.pair_emb is not None:
            arrays["pair_emb"] = s.pair_emb.numpy()
            arrays["pair_image_index"] = s.pair_image_index.numpy()
        np.savez(directory / f"{s.record.name}.npz", **arrays)


def load_embeddings(record: EvalSet, directory: Path) -> EmbeddedSet:
    with np.load(directory / f"{record.name}.npz") as data:
        pair = data["pair_emb"] if "pair_emb" in data else None
        index = data["pair_image_index"] if "pair_image_index" in data else None
        return EmbeddedSet(
            record=record,
            image_emb=torch.from_numpy(data["image_emb"]),
            pair_emb=None if pair is None else torch.from_numpy(pair),
            pair_image_index=None if index is None else torch.from_numpy(index),
        )
