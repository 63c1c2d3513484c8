"""Make a small set of real photos with captions, for trying LiT on your own kind of data.

The photos are the sample images that scikit-image ships (an astronaut, a cat, a cup of coffee, a
rocket, the moon, ...: real photographs, no network needed). Each becomes a class; crops of it are the
training images (captions written for them) and other crops the labelled evaluation images:

    OUT/images/<class>-<n>.jpg     training images
    OUT/train.csv                  image,caption (two captions per image, so several rows name one image)
    OUT/eval/<class>/<n>.jpg       labelled evaluation set: an image folder per class
    OUT/classes.txt                class folder<TAB>name used in prompts
    OUT/shards/photos-00000N.tar   the training pairs again as WebDataset shards (one caption per image)

    pip install scikit-image && python scripts/photo_set.py photos
"""

from __future__ import annotations

import argparse
import csv
import io
import random
from pathlib import Path

from PIL import Image

# class folder -> (scikit-image sample, name used in prompts, captions written for the photo)
PHOTOS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "astronaut": ("astronaut", "astronaut", (
        "an astronaut in an orange spacesuit",
        "a portrait of a smiling astronaut in front of a flag",
        "an astronaut posing for an official photo",
    )),
    "cat": ("chelsea", "cat", (
        "a ginger cat looking to the side",
        "a close-up of a tabby cat",
        "a cat with long whiskers",
    )),
    "coffee_cup": ("coffee", "coffee cup", (
        "a cup of coffee on a saucer",
        "a red coffee cup seen from above",
        "coffee with foam in a cup with a spoon",
    )),
    "rocket": ("rocket", "rocket", (
        "a rocket on the launch pad",
        "a space rocket ready for launch",
        "a tall rocket standing against the sky",
    )),
    "motorcycle": ("stereo_motorcycle", "motorcycle", (
        "a motorcycle parked indoors",
        "a motorcycle seen from the side",
        "a shiny motorcycle in a garage",
    )),
    "galaxies": ("hubble_deep_field", "galaxies", (
        "galaxies scattered across the dark sky",
        "a telescope photo of distant galaxies",
        "many small galaxies in deep space",
    )),
    "moon": ("moon", "moon", (
        "the grey surface of the moon",
        "craters on the surface of the moon",
        "a close-up of the moon",
    )),
    "coins": ("coins", "coins", (
        "a collection of old coins",
        "rows of coins on a table",
        "coins photographed from above",
    )),
    "bricks": ("brick", "brick wall", (
        "a wall of bricks",
        "bricks laid in rows in a brick wall",
        "the texture of an old brick wall",
    )),
    "grass": ("grass", "grass", (
        "a patch of grass",
        "blades of grass close up",
        "long grass in a field",
    )),
    "gravel": ("gravel", "gravel", (
        "a pile of gravel",
        "small stones of gravel on the ground",
        "grey gravel seen from above",
    )),
    "cameraman": ("camera", "cameraman", (
        "a cameraman standing behind his camera",
        "a man with a camera on a tripod",
        "a cameraman in a coat on a lawn",
    )),
    "text_page": ("page", "page of text", (
        "a page of text from an old book",
        "printed text on a page of paper",
        "a scanned page of text",
    )),
    "retina": ("retina", "retina", (
        "a photo of the retina at the back of the eye",
        "blood vessels in the retina of an eye",
        "an eye doctor's image of a retina",
    )),
    "cells": ("immunohistochemistry", "stained cells", (
        "stained cells under a microscope",
        "a microscope image of stained cells in tissue",
        "brown and blue stained cells",
    )),
    "clock": ("clock", "clock", (
        "a clock on a shelf, blurred by motion",
        "an old clock with a round face",
        "a blurry photo of a clock",
    )),
}  # fmt: skip
TRAIN_CROPS = 4
EVAL_CROPS = 2
SIZE = 160
SHARD_SAMPLES = 24


def sample_photo(name: str) -> Image.Image:
    from skimage import data

    pixels = getattr(data, name)()
    if isinstance(pixels, tuple):  # stereo_motorcycle: (left, right, disparity)
        pixels = pixels[0]
    return Image.fromarray(pixels).convert("RGB")


def crop(photo: Image.Image, rng: random.Random) -> Image.Image:
    """A random square crop covering 45-85% of the short side, maybe mirrored, resized to SIZE."""
    width, height = photo.size
    side = int(min(width, height) * rng.uniform(0.45, 0.85))
    left, top = rng.randint(0, width - side), rng.randint(0, height - side)
    image = photo.crop((left, top, left + side, top + side)).resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return image.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else image


def jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def make(out: Path, seed: int = 0) -> None:
    import webdataset as wds

    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "shards").mkdir(exist_ok=True)
    rows: list[tuple[str, str]] = []
    samples: list[tuple[str, bytes, str]] = []
    for folder, (sample, _, captions) in PHOTOS.items():
        photo = sample_photo(sample)
        rng = random.Random(f"{seed}-{folder}")
        for n in range(TRAIN_CROPS):
            name = f"{folder}-{n}"
            data = jpeg(crop(photo, rng))
            (out / "images" / f"{name}.jpg").write_bytes(data)
            texts = [captions[n % len(captions)], captions[(n + 1) % len(captions)]]
            rows += [(f"images/{name}.jpg", text) for text in texts]
            samples.append((name, data, texts[0]))
        (out / "eval" / folder).mkdir(parents=True, exist_ok=True)
        for n in range(EVAL_CROPS):
            (out / "eval" / folder / f"{n}.jpg").write_bytes(jpeg(crop(photo, rng)))
    with open(out / "train.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "caption"])
        writer.writerows(rows)
    classes = "".join(f"{folder}\t{name}\n" for folder, (_, name, _) in PHOTOS.items())
    (out / "classes.txt").write_text(classes)
    random.Random(seed).shuffle(samples)
    pattern = str(out / "shards" / "photos-%06d.tar")
    with wds.ShardWriter(pattern, maxcount=SHARD_SAMPLES, verbose=0) as sink:
        for key, data, caption in samples:
            sink.write({"__key__": key, "jpg": data, "txt": caption})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make(args.out, args.seed)
    print(f"wrote {len(PHOTOS)} classes of photos to {args.out}")


if __name__ == "__main__":
    main()
