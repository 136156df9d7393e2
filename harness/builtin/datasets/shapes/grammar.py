"""Captions of the shapes world: a small grammar with paraphrases and synonyms, and its parser.

A caption names every object's size, colour, shape and position, and 40% of captions name the
background. It is drawn from sentence templates (word orders) and synonym lists, e.g. for one
scene::

    a small red circle on the left
    left: tiny crimson disc
    there is a little scarlet dot to the left, on a dark background

Two-object captions join two object phrases with "and" or ";" (in either order). Because the
attribute vocabularies are disjoint (``attributes.WORDS``), ``parse_caption`` inverts the
grammar: split at "and"/";", map each word to its attribute, ignore the rest.
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
# two-comma form, so that every caption fits open_clip's 32-token context (with start/end tokens).
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


def describe(scenes: Scenes, i: int, pick: _Picker) -> tuple[str, tuple[str, ...]]:
    """One caption of scene ``i`` and the templates it used."""
    if scenes.n_objects[i] == 1:
        text, t = _object_phrase(pick, OBJECT_TEMPLATES, scenes.shape[i, 0], scenes.colour[i, 0],
                                 scenes.size[i, 0], scenes.position[i, 0])
        used = (t,)
    else:
        order = (0, 1) if pick.choice((0, 1)) == 0 else (1, 0)
        parts = [
            _object_phrase(pick, PAIRABLE_TEMPLATES, scenes.shape[i, k], scenes.colour[i, k], scenes.size[i, k],
                           scenes.position[i, k])
            for k in order
        ]
        pair = pick.choice(PAIR_TEMPLATES)
        text = pair.replace("{1}", parts[0][0]).replace("{2}", parts[1][0])
        used = (pair, parts[0][1], parts[1][1])
    if pick.choice(_MENTION_BACKGROUND):
        template = pick.choice(BACKGROUND_TEMPLATES)
        b = pick.choice(BACKGROUNDS[scenes.background[i]].words)
        text = template.format(x=text, a=article(b), b=b)
        used += (template,)
    return text, used


def captions(scenes: Scenes, rng: np.random.Generator, with_templates: bool = False) -> list:
    """One caption per scene, drawn with ``rng`` (deterministic given its state).

    With ``with_templates`` each item is ``(caption, templates_used)`` (for coverage counts).
    """
    draws = rng.integers(0, 2**31, size=(len(scenes), _RANDOM_PER_CAPTION))
    out = [describe(scenes, i, _Picker(draws[i])) for i in range(len(scenes))]
    return out if with_templates else [text for text, _ in out]


def distinct_captions(scenes: Scenes, rng: np.random.Generator, k: int, max_tries: int = 20) -> list[list[str]]:
    """``k`` different captions per scene (for retrieval); fewer only if the grammar runs out."""
    result: list[list[str]] = [[] for _ in range(len(scenes))]
    for _ in range(max_tries):
        todo = np.array([i for i, caps in enumerate(result) if len(caps) < k], dtype=np.int64)
        if len(todo) == 0:
            break
        for i, text in zip(todo, captions(scenes.take(todo), rng)):
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
