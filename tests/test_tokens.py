"""Token caching and the compact token embedding of the open_clip encoder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import harness
from harness.builtin.encoders.tokens import TokenCache, cacheable
from harness.builtin.encoders.vocabulary import CompactTokenEmbedding


@pytest.fixture(scope="module")
def encoder():
    return harness.create_encoder("open_clip", model="harness-tiny-cnn")


def test_cached_tokens_are_the_tokenizers_tensor(encoder):
    assert isinstance(encoder._tokens, TokenCache)
    texts = ["a big red circle on the left", "a small blue square", "a big red circle on the left", "",
             "long " * 40, "Ünïcode  spaces\tand CAPS"]
    for _ in range(2):  # a miss, then hits
        got = encoder.tokenize(texts)
        want = encoder.tokenizer(texts)
        assert got.dtype == want.dtype == torch.long and got.shape == want.shape and torch.equal(got, want)
    assert encoder.tokenize("a small blue square").shape == (1, want.shape[1])
    assert encoder.tokenize([]).shape == encoder.tokenizer([]).shape


def test_the_cache_is_bounded_and_least_recently_used_goes_first():
    calls = []

    def tokenizer(texts):
        calls.append(list(texts))
        return torch.tensor([[len(t), 0] for t in texts], dtype=torch.long)

    cache = TokenCache(tokenizer, size=2)
    cache(["a", "bb"])
    cache(["a"])  # "a" is now the most recent
    cache(["ccc"])  # evicts "bb"
    assert list(cache.rows) == ["a", "ccc"]
    assert torch.equal(cache(["bb", "a", "bb"]), torch.tensor([[2, 0], [1, 0], [2, 0]]))
    assert calls[-1] == ["bb"]  # one call per distinct missing text
    assert len(cache.rows) <= 3  # a batch larger than the cache is still served whole


def test_only_per_text_tokenizers_are_cached():
    from open_clip.tokenizer import SimpleTokenizer

    assert cacheable(SimpleTokenizer())
    assert not cacheable(SimpleTokenizer(reduction_mask="random"))  # random: caching would freeze the draw
    assert not cacheable(lambda texts: None)


def _train(encoder, loss, batches, grad_clip):
    from harness.training import param_groups

    opt = torch.optim.AdamW(param_groups(encoder.model, loss, 0.1), lr=1e-2, betas=(0.9, 0.98), eps=1e-6, fused=True)
    encoder.model.train()
    for i, (images, captions) in enumerate(batches):
        for g in opt.param_groups:
            g["lr"] = 1e-2 * (1 + math.cos(math.pi * i / len(batches))) / 2 + 1e-4
        x = encoder.preprocess_images(images, train=True)
        y = encoder.tokenize(captions)
        total = sum(loss(F.normalize(encoder.encode_image(x).float(), dim=-1),
                         F.normalize(encoder.encode_pair(y).float(), dim=-1)).values())
        opt.zero_grad(set_to_none=True)
        total.backward()
        if grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in opt.param_groups for p in g["params"]], grad_clip)
        opt.step()


def _batches(n=6, size=16):
    ds = harness.create_dataset("shapes", train_size=256, eval_size=16, captions="canonical")
    pairs, rng = ds.train_pairs(), np.random.default_rng(0)
    batches = [pairs.get_batch(rng.integers(0, len(pairs), size), rng) for _ in range(n)]
    late = ["a huge purple zebra", "quantum"]  # tokens first read at the last step
    batches[-1] = (batches[-1][0], batches[-1][1][:-2] + late)
    return batches


def _pair(rows):
    torch.manual_seed(0)
    dense = harness.create_encoder("open_clip", model="harness-tiny-cnn")
    torch.manual_seed(0)
    compact = harness.create_encoder("open_clip", model="harness-tiny-cnn")
    compact.compact_vocabulary(rows)
    return dense, compact


def test_compact_vocabulary_is_the_full_tables_maths_without_clipping():
    dense, compact = _pair(rows=256)
    module = compact.model.token_embedding
    assert isinstance(module, CompactTokenEmbedding)
    names = [n for n, _ in compact.model.named_parameters()]
    assert names == [n for n, _ in dense.model.named_parameters()]  # same name, same place: same optimizer group
    assert compact.model.token_embedding.weight.shape == (257, 64)
    batches = _batches()
    torch.manual_seed(1)
    _train(dense, harness.create_loss("clip"), batches, grad_clip=None)
    torch.manual_seed(1)
    _train(compact, harness.create_loss("clip"), batches, grad_clip=None)
    a, b = dense.model.state_dict(), compact.model.state_dict()
    assert list(a) == list(b)
    for key in a:  # every tensor, the full token table included (rows never read: decayed only)
        assert torch.equal(a[key], b[key]), key
    dense.model.eval()
    compact.model.eval()
    with torch.no_grad():
        texts = ["a photo of a big red circle", "unseen words: xylophone"]
        assert torch.equal(dense.encode_pair(dense.tokenize(texts)), compact.encode_pair(compact.tokenize(texts)))


def test_clipping_may_differ_in_the_last_bit():
    """Why it is off by default: the clip norm over the smaller table sums in another order."""
    dense, compact = _pair(rows=256)
    batches = _batches(n=10, size=32)
    torch.manual_seed(1)
    _train(dense, harness.create_loss("clip"), batches, grad_clip=1.0)
    torch.manual_seed(1)
    _train(compact, harness.create_loss("clip"), batches, grad_clip=1.0)
    a, b = dense.model.state_dict(), compact.model.state_dict()
    assert max(float((a[k].float() - b[k].float()).abs().max()) for k in a) < 1e-4  # equal or within float noise


def test_too_many_tokens_while_training_raise_but_eval_serves_them():
    dense, compact = _pair(rows=4)
    tokens = compact.tokenize(["a big red circle on the left and a small blue square"])
    compact.model.train()
    with pytest.raises(RuntimeError, match="token_rows"):
        compact.encode_pair(tokens)
    compact.model.eval()
    dense.model.eval()
    with torch.no_grad():
        assert torch.equal(compact.encode_pair(tokens), dense.encode_pair(tokens))


def test_a_full_table_loads_into_a_compact_embedding():
    dense, compact = _pair(rows=8)
    table = torch.randn(49408, 64)
    compact.model.token_embedding.load_state_dict({"weight": table})
    assert torch.equal(compact.model.token_embedding.full_table(), table)
    assert compact.model.state_dict()["token_embedding.weight"].shape == (49408, 64)


def test_fused_adamw_decays_an_untouched_row_by_one_float32_multiplication():
    """The premise of the sentinel: a row with zero gradient and moments is only multiplied by (1 - lr wd)."""
    g = torch.Generator().manual_seed(0)
    p = torch.nn.Parameter(torch.randn(64, 64, generator=g))
    with torch.no_grad():
        p[0] = 1.0
    opt = torch.optim.AdamW([p], lr=1e-3, weight_decay=0.1, fused=True)
    shadow = p.detach()[1:32].clone()
    for t in range(50):
        opt.param_groups[0]["lr"] = 1e-3 * (t + 1) / 7
        grad = torch.zeros_like(p)
        grad[32:] = torch.randn(32, 64, generator=g)
        p.grad = grad
        opt.step()
        shadow.mul_(p.detach()[0, 0].clone())
        with torch.no_grad():
            p[0] = 1.0
        assert torch.equal(shadow, p.detach()[1:32])
