"""The rules that say whether an image shows its prompt (WORLD.md, "What counts as correct").

Pixels are sorted into palette classes, classes into 4-connected components, components into
shape classes; each domain then checks a few constraints on those. `check` reports both the
exact verdict and partial credit, the share of constraints met, which the synthetic director
uses to rank two wrong images.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from evolvedirector.worlds.shapes.grammar import ANCHORS, GLYPHS, LETTERS, PALETTE, Spec, parse

MAX_COLOR_DISTANCE = 80.0  # a pixel of class k lies closer than this to palette colour k
MIN_COMPONENT_SHARE = 0.006  # smaller components (as a share of the canvas) are ignored
SQUARE_FILL = 0.95  # fill ratio from which a component is a square
TRIANGLE_MASS_HEIGHT = 0.575  # centroid height r from which a non-square is a triangle
CIRCLE_FILL = 0.6  # fill ratio from which a non-square, non-triangle is a circle
MIN_RELATION_OFFSET = 0.15  # least centroid offset along a relation's axis
MIN_GLYPH_AGREEMENT = 30  # of the 35 cells of a glyph

_COLORS = tuple(PALETTE)
# The palette, then white: a pixel nearest to white is background.
_REFERENCE = np.array([*PALETTE.values(), (255, 255, 255)], dtype=np.float64)
_GLYPH_INK = np.array([[[ch == "#" for ch in row] for row in GLYPHS[letter]] for letter in LETTERS])  # (8, 7, 5)


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """(H, W) ints: the palette index (PALETTE order) of each pixel, or -1 for none.

    A pixel is of colour k when it lies within 80 of k and strictly nearer to k than to every
    other palette colour and to white. Images that are not uint8 are rounded into 0..255 first.
    """
    rgb = np.asarray(image)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {rgb.shape}")
    rgb = rgb[..., :3]
    if rgb.dtype != np.uint8:
        rgb = np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
    # An image holds few distinct colours: classify each once, then spread the classes back.
    packed = (rgb[..., 0].astype(np.int64) << 16) | (rgb[..., 1].astype(np.int64) << 8) | rgb[..., 2]
    colors, inverse = np.unique(packed, return_inverse=True)
    channels = np.stack([colors >> 16, (colors >> 8) & 255, colors & 255], axis=-1).astype(np.float64)
    squared = ((channels[:, None, :] - _REFERENCE) ** 2).sum(axis=-1)  # (colours, palette + white)
    nearest = squared.argmin(axis=-1)
    best = squared[np.arange(len(colors)), nearest]
    strictly_nearest = (squared == best[:, None]).sum(axis=-1) == 1
    is_color = (nearest < len(_COLORS)) & (best < MAX_COLOR_DISTANCE**2) & strictly_nearest
    return np.where(is_color, nearest, -1)[inverse.reshape(packed.shape)]


@dataclass
class Component:
    """A 4-connected set of pixels of one palette colour."""

    color: str
    area: int  # pixels
    bbox: tuple[int, int, int, int]  # (top, left, bottom, right) in pixels; bottom and right exclusive
    centroid: tuple[float, float]  # normalised (x, y) of the mean pixel centre
    fill_ratio: float  # WORLD.md's f: area / bounding-box area
    mass_height: float  # WORLD.md's r: (mean row + 0.5 - top row) / box height; 0.5 when symmetric
    shape: str | None  # "circle", "square", "triangle", or None


def components(image: np.ndarray) -> list[Component]:
    """Every component of the image that is not too small to count, by colour then raster order."""
    return _components(classify_pixels(image))


def shape_class(fill_ratio: float, mass_height: float) -> str | None:
    """WORLD.md's shape class of a component from its f and r."""
    if fill_ratio >= SQUARE_FILL:
        return "square"
    if mass_height >= TRIANGLE_MASS_HEIGHT:  # the mass sits low, under an apex
        return "triangle"
    if fill_ratio >= CIRCLE_FILL:
        return "circle"
    return None


def _components(classes: np.ndarray, only: Iterable[str] | None = None) -> list[Component]:
    height, width = classes.shape
    min_area = MIN_COMPONENT_SHARE * height * width
    indices = np.unique(classes) if only is None else [_COLORS.index(name) for name in only]
    row_of, col_of = np.indices(classes.shape)
    found: list[Component] = []
    for index in indices:
        if index < 0:
            continue
        labels, count = ndimage.label(classes == index)  # the default structure is 4-connectivity
        if count == 0:
            continue
        flat = labels.ravel()
        areas = np.bincount(flat, minlength=count + 1)
        row_sums = np.bincount(flat, weights=row_of.ravel(), minlength=count + 1)
        col_sums = np.bincount(flat, weights=col_of.ravel(), minlength=count + 1)
        for label, (rows, cols) in enumerate(ndimage.find_objects(labels), start=1):
            area = int(areas[label])
            if area < min_area:
                continue
            box_h, box_w = rows.stop - rows.start, cols.stop - cols.start
            mean_row, mean_col = row_sums[label] / area, col_sums[label] / area
            fill_ratio = area / (box_h * box_w)
            mass_height = (mean_row + 0.5 - rows.start) / box_h
            found.append(
                Component(
                    color=_COLORS[index],
                    area=area,
                    bbox=(rows.start, cols.start, rows.stop, cols.stop),
                    centroid=((mean_col + 0.5) / width, (mean_row + 0.5) / height),
                    fill_ratio=fill_ratio,
                    mass_height=mass_height,
                    shape=shape_class(fill_ratio, mass_height),
                )
            )
    return found


@dataclass(frozen=True)
class Check:
    """The verdict on one image: exactly correct or not, and partial credit in [0, 1]."""

    correct: bool
    score: float  # share of the domain's constraints met; 1.0 exactly when correct


def check(prompt: str | Spec, image: np.ndarray) -> Check:
    """Judge an image against a prompt.

    The constraints counted for partial credit (all met exactly when the image is correct):
      object:   exactly one component in all; a component of the colour; the largest such has
                the shape; the anchor nearest its centroid is the named one.
      relation: the largest component of colour 1 exists and has shape 1; the same for colour 2
                and shape 2; the first lies on the named side of the second by >= 0.15 along the
                relation's axis; its offset along that axis exceeds the one across it.
      count:    a component of the colour; exactly n of them; every one has the shape.
      text:     some pixel of the colour; glyph agreement of >= 30 of 35 cells (partly met as
                agreement / 30); no other glyph agrees in more cells.
    """
    spec = prompt if isinstance(prompt, Spec) else parse(prompt)
    met = _CONSTRAINTS[spec.domain](spec, classify_pixels(image))
    correct = all(value >= 1.0 for value in met)
    return Check(correct=correct, score=1.0 if correct else sum(met) / len(met))


def is_correct(prompt: str | Spec, image: np.ndarray) -> bool:
    """Whether the image is correct for the prompt under WORLD.md's rules."""
    return check(prompt, image).correct


def _object_constraints(spec: Spec, classes: np.ndarray) -> list[float]:
    found = _components(classes)
    subject = _largest(found, spec.color)
    return [
        len(found) == 1,
        subject is not None,
        subject is not None and subject.shape == spec.shape,
        subject is not None and _nearest_anchor(subject.centroid) == spec.where,
    ]


def _relation_constraints(spec: Spec, classes: np.ndarray) -> list[float]:
    found = _components(classes, only=(spec.color, spec.color2))
    first, second = _largest(found, spec.color), _largest(found, spec.color2)
    met = [
        first is not None and first.shape == spec.shape,
        second is not None and second.shape == spec.shape2,
    ]
    if first is None or second is None:
        return met + [False, False]
    dx = second.centroid[0] - first.centroid[0]  # > 0 when the first lies to the left
    dy = second.centroid[1] - first.centroid[1]  # > 0 when the first lies above (y points down)
    along, across = {
        "to the left of": (dx, dy),
        "to the right of": (-dx, dy),
        "above": (dy, dx),
        "below": (-dy, dx),
    }[spec.relation]
    return met + [along >= MIN_RELATION_OFFSET, abs(along) > abs(across)]


def _count_constraints(spec: Spec, classes: np.ndarray) -> list[float]:
    found = _components(classes, only=(spec.color,))
    return [
        len(found) > 0,
        len(found) == spec.count,
        len(found) > 0 and all(c.shape == spec.shape for c in found),
    ]


def _text_constraints(spec: Spec, classes: np.ndarray) -> list[float]:
    ink = classes == _COLORS.index(spec.color)
    if not ink.any():
        return [False, 0.0, False]
    agreements = dict(zip(LETTERS, _glyph_agreements(ink)))
    own = agreements[spec.letter]
    unrivalled = all(agreements[other] <= own for other in LETTERS if other != spec.letter)
    return [True, min(1.0, own / MIN_GLYPH_AGREEMENT), unrivalled]


_CONSTRAINTS: dict[str, Callable[[Spec, np.ndarray], list[float]]] = {
    "object": _object_constraints,
    "relation": _relation_constraints,
    "count": _count_constraints,
    "text": _text_constraints,
}


def _largest(found: list[Component], color: str) -> Component | None:
    of_color = [c for c in found if c.color == color]
    return max(of_color, key=lambda c: c.area) if of_color else None


def _nearest_anchor(centroid: tuple[float, float]) -> str | None:
    """The anchor nearest the point, or None when two are equally near."""
    distances = sorted(((centroid[0] - x) ** 2 + (centroid[1] - y) ** 2, name) for name, (x, y) in ANCHORS.items())
    return distances[0][1] if distances[0][0] < distances[1][0] else None


def _glyph_agreements(ink: np.ndarray) -> np.ndarray:
    """For each letter of LETTERS, in how many of the 35 cells the inked box agrees with it.

    The bounding box of the ink is cut into 5 x 7 cells; a pixel belongs to the cell that holds
    its centre, and a cell is marked ink when at least half its pixels are ink.
    """
    rows, cols = np.flatnonzero(ink.any(axis=1)), np.flatnonzero(ink.any(axis=0))
    box = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = box.shape
    cell_row = ((np.arange(height) + 0.5) * 7 / height).astype(int)
    cell_col = ((np.arange(width) + 0.5) * 5 / width).astype(int)
    cell = (cell_row[:, None] * 5 + cell_col[None, :]).ravel()
    inked = np.bincount(cell, weights=box.ravel(), minlength=35)
    total = np.bincount(cell, minlength=35)
    marked = ((total > 0) & (2 * inked >= total)).reshape(7, 5)
    return (_GLYPH_INK == marked).sum(axis=(1, 2))
