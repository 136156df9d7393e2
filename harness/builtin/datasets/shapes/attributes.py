"""The vocabulary of the shapes world: attribute values, their colours and their words.

Every attribute value has a canonical name (used for class names and arithmetic words) and a
list of synonyms (the canonical name first) that captions pick from. The word sets of the
attributes are disjoint, so a caption's words map back to attributes unambiguously
(``grammar.parse_caption``).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Value:
    """One attribute value: canonical ``name``, the ``words`` captions use for it, and an RGB colour."""

    name: str
    words: tuple[str, ...]
    rgb: tuple[int, int, int] | None = None


# Shapes, in the order `num_shapes` takes them (the first six are the default world).
SHAPES: tuple[Value, ...] = (
    Value("circle", ("circle", "disc", "dot")),
    Value("square", ("square", "box", "block")),
    Value("triangle", ("triangle", "delta", "wedge")),
    Value("star", ("star", "pentagram", "starlet")),
    Value("cross", ("cross", "plus", "x")),
    Value("diamond", ("diamond", "kite", "gem")),
    Value("ring", ("ring", "hoop", "donut")),
    Value("hexagon", ("hexagon", "hex", "honeycomb")),
    Value("heart", ("heart", "valentine")),
)

# Object colours, in the order `num_colours` takes them. None is close to a background tint.
COLOURS: tuple[Value, ...] = (
    Value("red", ("red", "crimson", "scarlet"), (215, 35, 35)),
    Value("green", ("green", "emerald", "jade"), (30, 150, 50)),
    Value("blue", ("blue", "cobalt", "azure"), (40, 75, 225)),
    Value("yellow", ("yellow", "golden", "lemon"), (240, 220, 40)),
    Value("purple", ("purple", "violet", "lilac"), (135, 50, 185)),
    Value("orange", ("orange", "tangerine", "amber"), (250, 135, 25)),
    Value("cyan", ("cyan", "turquoise", "aqua"), (35, 205, 215)),
    Value("pink", ("pink", "rose", "fuchsia"), (250, 120, 185)),
    Value("brown", ("brown", "chocolate", "chestnut"), (125, 75, 35)),
    Value("lime", ("lime", "citrus"), (160, 235, 50)),
)

SIZES: tuple[Value, ...] = (
    Value("small", ("small", "tiny", "little")),
    Value("large", ("large", "big", "huge")),
)

# Positions: `words` are the bare words ("left: ..."); PHRASES below are the prepositional forms.
POSITIONS: tuple[Value, ...] = (
    Value("left", ("left", "left side")),
    Value("right", ("right", "right side")),
    Value("top", ("top", "upper part")),
    Value("bottom", ("bottom", "lower part")),
    Value("centre", ("centre", "center", "middle")),
)
PHRASES: dict[str, tuple[str, ...]] = {
    "left": ("on the left", "at the left", "to the left", "on the left side", "in the left half"),
    "right": ("on the right", "at the right", "to the right", "on the right side", "in the right half"),
    "top": ("at the top", "near the top", "on top", "in the upper part", "in the top half"),
    "bottom": ("at the bottom", "near the bottom", "in the lower part", "in the bottom half"),
    "centre": ("in the centre", "in the middle", "at the center", "in the center"),
}
# Where each position puts the object's centre, as a fraction of (width, height).
POSITION_CENTRES: dict[str, tuple[float, float]] = {
    "left": (0.3, 0.5),
    "right": (0.7, 0.5),
    "top": (0.5, 0.3),
    "bottom": (0.5, 0.7),
    "centre": (0.5, 0.5),
}
# The position pairs a two-object image uses (first object, second object).
PAIRED_POSITIONS: tuple[tuple[str, str], ...] = (("left", "right"), ("top", "bottom"))

BACKGROUNDS: tuple[Value, ...] = (
    Value("black", ("black", "dark"), (12, 12, 14)),
    Value("grey", ("grey", "gray", "slate"), (78, 80, 86)),
    Value("white", ("white", "light", "pale"), (240, 240, 236)),
    Value("beige", ("beige", "cream", "sand"), (222, 206, 172)),
)

# Object radius (half its extent) as a fraction of the image side, per size.
SIZE_RADIUS: dict[str, float] = {"small": 0.14, "large": 0.24}


def _word_table() -> dict[str, tuple[str, str]]:
    """Every single word a caption can use for an attribute -> (attribute, canonical value)."""
    table: dict[str, tuple[str, str]] = {}
    groups = {"shape": SHAPES, "colour": COLOURS, "size": SIZES, "position": POSITIONS, "background": BACKGROUNDS}
    for kind, values in groups.items():
        for value in values:
            words = list(value.words)
            if kind == "position":
                words += list(PHRASES[value.name])
            for phrase in words:
                for word in phrase.split():
                    if word in ("on", "the", "at", "to", "in", "near", "side", "part", "half"):
                        continue
                    previous = table.setdefault(word, (kind, value.name))
                    if previous != (kind, value.name):
                        raise AssertionError(f"word {word!r} is used by {previous} and {(kind, value.name)}")
    return table


WORDS: dict[str, tuple[str, str]] = _word_table()
