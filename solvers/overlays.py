"""Segmentations drawn over their images, with outlines and a colour legend.

`overlay(rgb, label, colours)` tints every object pixel with its class
colour and traces each region's edge at full colour; background and void
pixels show the image as it is. `overlay_sheet(rows, titles, names,
colours)` lays such tiles out as a table (one row per scene, one column per
title) above a legend that names each class colour.
"""
from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from data_layers.palette import VOID

ALPHA = 0.5         # weight of the class colour over an object pixel
FONT_SIZE = 16
GAP = 6             # pixels between tiles
WHITE, BLACK = (255, 255, 255), (0, 0, 0)


def edges(label: np.ndarray) -> np.ndarray:
    """True where a pixel's 4-neighbour has another label (inside the image)."""
    edge = np.zeros(label.shape, dtype=bool)
    vertical = label[1:, :] != label[:-1, :]
    horizontal = label[:, 1:] != label[:, :-1]
    edge[1:, :] |= vertical
    edge[:-1, :] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge


def overlay(rgb: np.ndarray, label: np.ndarray, colours: Mapping[int, tuple[int, int, int]],
            scale: int = 1) -> np.ndarray:
    """`rgb` (H x W x 3 uint8) with the object classes of `label` blended in
    and outlined, enlarged `scale` times (nearest neighbour)."""
    if scale > 1:
        rgb = rgb.repeat(scale, 0).repeat(scale, 1)
        label = label.repeat(scale, 0).repeat(scale, 1)
    out = rgb.astype(np.float64)
    boundary = edges(label)
    for cls, colour in colours.items():
        region = label == cls
        out[region] = (1 - ALPHA) * out[region] + ALPHA * np.asarray(colour, dtype=np.float64)
        out[region & boundary] = colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _font(size: int = FONT_SIZE):
    return ImageFont.load_default(size=size)


def legend_strip(names: Mapping[int, str], colours: Mapping[int, tuple[int, int, int]],
                 width: int) -> Image.Image:
    """One line of colour swatches with the class names, `width` pixels wide
    (wrapping onto more lines when needed)."""
    font = _font()
    swatch, pad = FONT_SIZE, 10
    entries = [(colours[c], names[c]) for c in colours]
    widths = [swatch + 4 + int(font.getlength(name)) + 2 * pad for _, name in entries]
    lines, line, used = [], [], 0
    for entry, entry_width in zip(entries, widths):
        if line and used + entry_width > width:
            lines.append(line)
            line, used = [], 0
        line.append((entry, entry_width))
        used += entry_width
    lines.append(line)
    height = len(lines) * (swatch + pad) + pad
    strip = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(strip)
    for row, line in enumerate(lines):
        x, y = pad, pad + row * (swatch + pad)
        for (colour, name), entry_width in line:
            draw.rectangle([x, y, x + swatch - 1, y + swatch - 1], fill=colour, outline=BLACK)
            draw.text((x + swatch + 4, y + swatch // 2), name, fill=BLACK, font=font, anchor="lm")
            x += entry_width
    return strip


def overlay_sheet(rows: Sequence[Sequence[np.ndarray]], titles: Sequence[str],
                  legend: Image.Image | None = None) -> Image.Image:
    """Tiles (H x W x 3 uint8, all the same size) in a table under column
    `titles`, with `legend` (e.g. `legend_strip`) below."""
    if not rows or any(len(tiles) != len(titles) for tiles in rows):
        raise ValueError(f"every row needs one tile per title ({len(titles)})")
    tile_h, tile_w = rows[0][0].shape[:2]
    header = FONT_SIZE + 2 * GAP
    width = len(titles) * (tile_w + GAP) + GAP
    height = header + len(rows) * (tile_h + GAP) + (legend.height if legend else 0)
    sheet = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(sheet)
    font = _font()
    for column, title in enumerate(titles):
        draw.text((GAP + column * (tile_w + GAP) + tile_w // 2, header // 2), title,
                  fill=BLACK, font=font, anchor="mm")
    for r, tiles in enumerate(rows):
        for column, tile in enumerate(tiles):
            sheet.paste(Image.fromarray(tile),
                        (GAP + column * (tile_w + GAP), header + r * (tile_h + GAP)))
    if legend is not None:
        sheet.paste(legend, (0, height - legend.height))
    return sheet


def void_as_background(label: np.ndarray) -> np.ndarray:
    """Ground truth for drawing: VOC's void rings shown as background."""
    return np.where(label == VOID, 0, label)
