"""The conv image tower (``harness-tiny-cnn``) and the default suite's captions fitting its text context."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from harness.builtin.datasets.shapes.attributes import COLOURS, PAIRED_POSITIONS, POSITIONS, SHAPES, SIZES
from harness.builtin.datasets.shapes.grammar import canonical_caption
from harness.builtin.encoders.tiny_cnn import TinyConvNet, register_timm_models

ROOT = Path(__file__).resolve().parents[1]


def test_timm_registration_is_idempotent_and_builds_the_net():
    import timm

    register_timm_models()
    register_timm_models()
    assert timm.list_models("harness_tiny_cnn") == ["harness_tiny_cnn"]
    net = timm.create_model("harness_tiny_cnn", num_classes=0, global_pool="max")
    assert isinstance(net, TinyConvNet) and net.num_features == 64
    net.eval()
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 64)
    net.reset_classifier(5, global_pool="avg")
    assert net(torch.zeros(2, 3, 32, 32)).shape == (2, 5)
    with pytest.raises(ValueError, match="pretrained"):
        timm.create_model("harness_tiny_cnn", pretrained=True)


def test_open_clip_config_builds_a_conv_tower():
    import harness

    enc = harness.create_encoder("open_clip", model="harness-tiny-cnn")
    visual = enc.model.visual
    assert isinstance(visual.trunk, TinyConvNet)
    assert sum(p.numel() for p in visual.trunk.parameters()) < 200_000
    x = enc.preprocess_images(np.zeros((3, 32, 32, 3), dtype=np.uint8), train=False)
    assert enc.encode_image(x).shape == (3, 64)
    assert enc.encode_pair(enc.tokenize(["small red circle left"])).shape == (1, 64)
    assert visual.trunk.global_pool.pool_type == "max"


def default_suite() -> dict:
    return yaml.safe_load((ROOT / "suites" / "gap.yaml").read_text())


def test_default_grammar_fits_the_default_encoder_context():
    """Every canonical caption of the largest world (all shapes, colours, sizes, positions; one
    object or two on paired positions) fits the default suite encoder's context with its start and
    end tokens, so none is truncated. Exhaustive: every object phrase is tokenized, and a two-object
    caption's length is the sum of its phrases and " and " (BPE tokenizes words independently;
    checked on sampled full captions)."""
    import open_clip

    from harness.builtin.encoders.configs import register_model_configs

    suite = default_suite()
    [dataset] = suite["datasets"]
    assert dataset["name"] == "shapes" and dataset["params"].get("captions") == "canonical"
    register_model_configs()
    contexts = {open_clip.get_model_config(e["params"]["model"])["text_cfg"]["context_length"] for e in suite["encoders"]}
    context = min(contexts)  # every tower family of the suite (they share the text tower)
    tokenizer = open_clip.tokenizer.SimpleTokenizer()

    def n(text: str) -> int:
        return len(tokenizer.encode(text))

    objects = list(itertools.product(range(len(SHAPES)), range(len(COLOURS)), range(len(SIZES)), range(len(POSITIONS))))
    phrase = {o: n(canonical_caption([o])) for o in objects}
    assert max(phrase.values()) + 2 <= context
    index = {p.name: i for i, p in enumerate(POSITIONS)}
    longest = 0
    for first, second in PAIRED_POSITIONS:
        a = [o for o in objects if o[3] == index[first]]
        b = [o for o in objects if o[3] == index[second]]
        longest = max(longest, max(phrase[o] for o in a) + n("and") + max(phrase[o] for o in b))
    assert longest + 2 <= context, f"the longest caption takes {longest + 2} tokens, the context is {context}"
    rng = np.random.default_rng(0)
    for _ in range(300):
        o1, o2 = objects[rng.integers(len(objects))], objects[rng.integers(len(objects))]
        o2 = o2[:3] + ((o1[3] + 1) % 4,)
        text = canonical_caption([o1, o2])
        assert n(text) == phrase[o1] + n("and") + phrase[o2], text
    # and through the encoder's own tokenizer: the end token survives in the longest caption
    worst = canonical_caption([(7, 6, 1, 0), (7, 6, 1, 1)])  # "large cyan hexagon left and ..."
    assert n(worst) + 2 == longest + 2
    for encoder in suite["encoders"]:
        tok = open_clip.get_tokenizer(encoder["params"]["model"])([worst])[0]
        assert int(tok[n(worst) + 1]) == tokenizer.eot_token_id
