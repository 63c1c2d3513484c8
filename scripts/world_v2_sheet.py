"""Contact sheet of synthetic world version 2 samples with their captions, for reviewing the world by eye.

Usage: ``python scripts/world_v2_sheet.py [--out docs/images/world_v2_examples.png] [--count 48]``
"""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from training.data.synthetic import SyntheticWorld

CELL, COLUMNS, TEXT_LINES, LINE = 160, 6, 4, 13


def contact_sheet(count: int, split: str, seed: int, size: int) -> Image.Image:
    """``count`` samples of ``split``, each shown at 2.5x beside its caption (wrapped) and class."""
    world = SyntheticWorld(image_size=size, seed=seed, version=2)
    font = ImageFont.load_default(size=11)
    rows = -(-count // COLUMNS)
    height = CELL + TEXT_LINES * LINE + 8
    sheet = Image.new("RGB", (COLUMNS * (CELL + 8) + 8, rows * height + 8), "white")
    draw = ImageDraw.Draw(sheet)
    for i in range(count):
        image, caption, label = world.sample(split, i)  # type: ignore[arg-type]
        x, y = 8 + (i % COLUMNS) * (CELL + 8), 8 + (i // COLUMNS) * height
        sheet.paste(image.resize((CELL, CELL), Image.Resampling.NEAREST), (x, y))
        lines = textwrap.wrap(f"[{world.class_names[label]}] {caption}", 30)[:TEXT_LINES]
        for j, line in enumerate(lines):
            draw.text((x, y + CELL + 2 + j * LINE), line, fill="black", font=font)
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("docs/images/world_v2_examples.png"))
    parser.add_argument("--count", type=int, default=48)
    parser.add_argument("--split", default="lit", choices=("pretrain", "lit", "eval"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, default=64)
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(args.count, args.split, args.seed, args.size).save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
