"""Captions of the shapes world: two styles, and the parser that inverts them.

``paraphrase`` (the default world): a small grammar with paraphrases and synonyms. A caption
names every object's size, colour, shape and position, and 40% of captions name the background.
It is drawn from sentence templates (word orders) and synonym lists, e.g. for one scene::

    a small red circle on the left
    left: tiny crimson disc
    there is a little scarlet dot to the left, on a dark background

Two-object captions join two object phrases with "and" or ";" (in either order).

``canonical``: the one caption of a scene in canonical words, "SIZE COLOUR SHAPE POSITION" per
object, objects in position order joined by "and" ("small red circle left and large blue square
right"); at most 15 BPE tokens with start and end, so a 16-token context never cuts one.

Because the attribute vocabularies are disjoint (``attributes.WORDS``), ``parse_caption`` inverts
both: split at "and"/";", map each word to its attribute, ignore the rest.

``caption_group`` gives a caption's meaning as one integer (the ``caption_group`` loss extra): two
captions have the same meaning when they describe the same objects (each object's shape, colour,
size and position, in any order) and name the same background, or both name none; in the
canonical style (which never names the background) that is exactly equal captions.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

from harness.builtin.datasets.shapes.attributes import (
    BACKGROUNDS,
    COLOURS,
    PHRASES,
    POSITIONS,
    SHAPES,
    SIZES,
    WORDS,
)
from harness.builtin.datasets.shapes.world import Scenes

# One object. {a}: article, {s} size, {c} colour, {h} shape, {p} position phrase, {w} position word.
OBJECT_TEMPLATES: tuple[str, ...] = (
    "{a} {s} {c} {h} {p}",
    "{w}: {s} {c} {h}",
    "there is {a} {s} {c} {h} {p}",
    "{a} {c} {h}, {s}, {p}",
    "{p}, {a} {s} {c} {h}",
    "{s} {c} {h} {p}",
    "an image of {a} {s} {c} {h} {p}",
    "{a} {s} {h} in {c} {p}",
)
# Two objects: {1} and {2} are object phrases built from OBJECT_TEMPLATES (without a prefix).
PAIR_TEMPLATES: tuple[str, ...] = (
    "{1} and {2}",
    "{1}; {2}",
    "{1}, and {2}",
)
BACKGROUND_TEMPLATES: tuple[str, ...] = (
    "{x}, on {a} {b} background",
    "{x} against {a} {b} backdrop",
    "{x}; {b} background",
)
# Two-object captions leave out the nested "there is" / "an image of" (it reads badly) and the
# two-comma form, so that every caption fits a 32-token context (with start/end tokens). The
# ``harness-tiny-vit`` text context is 16 tokens: it cuts about a quarter of paraphrase captions
# (most two-object ones); the canonical style fits 16.
PAIRABLE_TEMPLATES: tuple[str, ...] = tuple(
    t for t in OBJECT_TEMPLATES if not t.startswith(("there is", "an image of")) and t.count(",") < 2
)

_RANDOM_PER_CAPTION = 20
_MENTION_BACKGROUND = (True, True, False, False, False)  # 40% of captions name the background


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


class _Picker:
    """Consumes a row of pre-drawn random integers (one numpy call per batch, not per choice)."""

    def __init__(self, row: np.ndarray):
        self.row = row
        self.i = 0

    def choice(self, seq):
        value = seq[int(self.row[self.i]) % len(seq)]
        self.i += 1
        return value


def _object_phrase(pick: _Picker, templates: tuple[str, ...], shape: int, colour: int, size: int,
                   position: int) -> tuple[str, str]:
    template = pick.choice(templates)
    pos = POSITIONS[position]
    words = {
        "s": pick.choice(SIZES[size].words),
        "c": pick.choice(COLOURS[colour].words),
        "h": pick.choice(SHAPES[shape].words),
        "p": pick.choice(PHRASES[pos.name]),
        "w": pick.choice(pos.words),
    }
    follows = re.search(r"\{a\} \{(\w)\}", template)  # the article agrees with the word after it
    words["a"] = article(words[follows.group(1)]) if follows else ""
    return template.format(**words), template


# One object of a scene: (shape, colour, size, position) indices into the vocabulary.
Obj = tuple[int, int, int, int]

CAPTION_STYLES = ("paraphrase", "canonical")


def scene_objects(scenes: Scenes, i: int) -> list[Obj]:
    """Scene ``i``'s objects in slot order."""
    return [
        (int(scenes.shape[i, k]), int(scenes.colour[i, k]), int(scenes.size[i, k]), int(scenes.position[i, k]))
        for k in range(int(scenes.n_objects[i]))
    ]


def describe_objects(objects: list[Obj], background: int, pick: _Picker) -> tuple[str, tuple[str, ...]]:
    """A paraphrase caption of ``objects`` (slot order) on ``background``, and the templates it used.

    The choices come from ``pick`` in a fixed order, so the same draws on an edited scene give the
    same templates, object order and synonym slots: a minimal edit (``negatives.py``).
    """
    if len(objects) == 1:
        text, t = _object_phrase(pick, OBJECT_TEMPLATES, *objects[0])
        used = (t,)
    else:
        order = (0, 1) if pick.choice((0, 1)) == 0 else (1, 0)
        parts = [_object_phrase(pick, PAIRABLE_TEMPLATES, *objects[k]) for k in order]
        pair = pick.choice(PAIR_TEMPLATES)
        text = pair.replace("{1}", parts[0][0]).replace("{2}", parts[1][0])
        used = (pair, parts[0][1], parts[1][1])
    if pick.choice(_MENTION_BACKGROUND):
        template = pick.choice(BACKGROUND_TEMPLATES)
        b = pick.choice(BACKGROUNDS[background].words)
        text = template.format(x=text, a=article(b), b=b)
        used += (template,)
    return text, used


def describe(scenes: Scenes, i: int, pick: _Picker) -> tuple[str, tuple[str, ...]]:
    """One caption of scene ``i`` and the templates it used."""
    return describe_objects(scene_objects(scenes, i), int(scenes.background[i]), pick)


def canonical_order(objects: list[Obj]) -> tuple[int, ...]:
    """Slots in caption order for the canonical style: by position (left, right, top, bottom, centre)."""
    return tuple(sorted(range(len(objects)), key=lambda k: (objects[k][3], k)))


def canonical_caption(objects: list[Obj], order: tuple[int, ...] | None = None) -> str:
    """``"SIZE COLOUR SHAPE POSITION"`` per object in canonical words, joined by ``" and "``.

    E.g. ``"small red circle left and large blue square right"``. ``order`` (slots) defaults to
    ``canonical_order(objects)``; negatives pass the positive's order so an edit stays in place.
    """
    order = canonical_order(objects) if order is None else order
    return " and ".join(
        f"{SIZES[z].name} {COLOURS[c].name} {SHAPES[h].name} {POSITIONS[p].name}"
        for h, c, z, p in (objects[k] for k in order)
    )


def caption_draws(rng: np.random.Generator, n: int) -> np.ndarray:
    """The random integers ``captions`` draws for ``n`` scenes (one numpy call)."""
    return rng.integers(0, 2**31, size=(n, _RANDOM_PER_CAPTION))


def caption_of(objects: list[Obj], background: int, draws: np.ndarray, style: str,
               order: tuple[int, ...] | None = None) -> str:
    """The caption of one scene given its row of draws (``caption_draws``) and the style."""
    if style == "canonical":
        return canonical_caption(objects, order)
    return describe_objects(objects, background, _Picker(draws))[0]


def captions(scenes: Scenes, rng: np.random.Generator, with_templates: bool = False,
             style: str = "paraphrase") -> list:
    """One caption per scene, drawn with ``rng`` (deterministic given its state).

    ``style``: ``"paraphrase"`` (templates and synonyms, the default world) or ``"canonical"`` (the
    one fixed caption of a scene, ``canonical_caption``). Both consume the same draws from ``rng``,
    so the style changes no other random choice of a run. With ``with_templates`` each item is
    ``(caption, templates_used)`` (for coverage counts).
    """
    if style not in CAPTION_STYLES:
        raise ValueError(f"caption style must be one of {', '.join(CAPTION_STYLES)}, got {style!r}")
    draws = caption_draws(rng, len(scenes))
    if style == "canonical":
        out = [(canonical_caption(scene_objects(scenes, i)), ("canonical",)) for i in range(len(scenes))]
    else:
        out = [describe(scenes, i, _Picker(draws[i])) for i in range(len(scenes))]
    return out if with_templates else [text for text, _ in out]


def distinct_captions(scenes: Scenes, rng: np.random.Generator, k: int, max_tries: int = 20,
                      style: str = "paraphrase") -> list[list[str]]:
    """``k`` different captions per scene (for retrieval); fewer only if the grammar runs out
    (the canonical style has one caption per scene)."""
    result: list[list[str]] = [[] for _ in range(len(scenes))]
    for _ in range(max_tries):
        todo = np.array([i for i, caps in enumerate(result) if len(caps) < k], dtype=np.int64)
        if len(todo) == 0:
            break
        for i, text in zip(todo, captions(scenes.take(todo), rng, style=style)):
            if text not in result[i]:
                result[i].append(text)
    return result


_SEGMENT = re.compile(r";|\band\b")
_WORD = re.compile(r"[a-z]+")


def parse_caption(text: str) -> dict[str, Any]:
    """Invert the grammar: ``{"objects": [{shape, colour, size, position}, ...], "background": str | None}``.

    Objects come in caption order; an attribute a segment does not name is absent from its dict.
    Raises ValueError when a segment names two values of one attribute.
    """
    objects: list[dict[str, str]] = []
    background = None
    for segment in _SEGMENT.split(text.lower()):
        found: dict[str, str] = {}
        for word in _WORD.findall(segment):
            kind, value = WORDS.get(word, (None, None))
            if kind is None:
                continue
            if kind == "background":
                if background not in (None, value):
                    raise ValueError(f"caption {text!r} names two backgrounds: {background}, {value}")
                background = value
                continue
            if found.get(kind, value) != value:
                raise ValueError(f"caption {text!r} names two {kind}s in one object: {found[kind]}, {value}")
            found[kind] = value
        if found:
            objects.append(found)
    return {"objects": objects, "background": background}


# caption_group: each attribute of an object as its index + 1 (0: not named), mixed radix
_RADICES = (len(SHAPES) + 1, len(COLOURS) + 1, len(SIZES) + 1, len(POSITIONS) + 1)
_OBJECT_CODES = int(np.prod(_RADICES)) + 1  # object codes are 1.._OBJECT_CODES - 1
_INDEX = {kind: {v.name: i for i, v in enumerate(values)}
          for kind, values in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES), ("position", POSITIONS))}
_BACKGROUND_INDEX = {v.name: i for i, v in enumerate(BACKGROUNDS)}


def caption_group(text: str) -> int:
    """The meaning of a caption as a non-negative integer: equal for two captions exactly when
    ``parse_caption`` reads the same objects from both (as a set: shape, colour, size and position
    each) and the same background (or none); the code itself, not a hash, so never a collision."""
    parsed = parse_caption(text)
    codes = []
    for obj in parsed["objects"]:
        code = 0
        for kind, radix in zip(("shape", "colour", "size", "position"), _RADICES):
            code = code * radix + (_INDEX[kind][obj[kind]] + 1 if kind in obj else 0)
        codes.append(code + 1)
    value = 0
    for code in sorted(codes):
        value = value * _OBJECT_CODES + code
    background = parsed["background"]
    value = value * (len(BACKGROUNDS) + 1) + (_BACKGROUND_INDEX[background] + 1 if background else 0)
    if value >= 2**63:
        raise ValueError(f"caption {text!r} names too many objects for a caption group")
    return value


def caption_groups(texts) -> np.ndarray:
    """``caption_group`` of each caption, as an int64 array."""
    return np.array([caption_group(t) for t in texts], dtype=np.int64)
