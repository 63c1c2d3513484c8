"""Manifest and WebDataset readers on real files: good data round-trips, bad data is named or counted."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from lit_bundle.preprocess import PreprocessSpec, preprocess_image
from training.data.pairs import DataError, ManifestPairs, collate_pairs, pixel_transform
from training.data.webdataset import WebDatasetPairs, webdataset_fingerprint

SPEC = PreprocessSpec(size=16)
TRANSFORM = pixel_transform(SPEC)


def make_image(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB")


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def images(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "imgs"
    folder.mkdir()
    paths = []
    for i in range(8):
        path = folder / f"{i}.png"
        make_image(i).save(path)
        paths.append(path)
    return paths


def write_csv(path: Path, rows: list[tuple[str, str]], header: str = "image,caption") -> Path:
    path.write_text(header + "\n" + "".join(f'{a},"{b}"\n' for a, b in rows))
    return path


def loader_error(loader: torch.utils.data.DataLoader) -> str:
    """Iterate until a DataError and return its message.

    The traceback is dropped so the iterator is freed (and its workers shut down) at once: a
    DataLoader iterator left to the cyclic GC waits 5 s per live worker before killing it.
    """
    try:
        for _ in loader:
            pass
    except DataError as exc:
        exc.__traceback__ = None
        return str(exc)
    raise AssertionError("expected a DataError")


def assert_matches(item, image_path: Path, caption: str) -> None:
    pixels, text = item
    assert text == caption
    expected = preprocess_image(Image.open(image_path).convert("RGB"), SPEC)
    assert torch.equal(pixels, torch.from_numpy(expected))


# -- manifests ---------------------------------------------------------------------------------


def test_csv_manifest_with_paths_relative_to_manifest(tmp_path: Path, images: list[Path]) -> None:
    manifest = write_csv(tmp_path / "data.csv", [(f"imgs/{i}.png", f"picture, number {i}") for i in range(8)])
    data = ManifestPairs(manifest, TRANSFORM)
    assert len(data) == 8
    for i in (0, 5):
        assert_matches(data[i], images[i], f"picture, number {i}")


def test_jsonl_manifest_with_image_root_and_custom_keys(tmp_path: Path, images: list[Path]) -> None:
    manifest = tmp_path / "meta" / "data.jsonl"
    manifest.parent.mkdir()
    lines = [json.dumps({"file": f"{i}.png", "text": f"caption {i}"}) for i in range(8)]
    manifest.write_text("\n".join(lines[:4]) + "\n\n" + "\n".join(lines[4:]) + "\n")
    data = ManifestPairs(
        manifest, TRANSFORM, image_root=tmp_path / "imgs", image_key="file", caption_key="text"
    )
    assert len(data) == 8
    assert_matches(data[6], images[6], "caption 6")


def test_absolute_paths_and_json_array(tmp_path: Path, images: list[Path]) -> None:
    manifest = tmp_path / "data.json"
    manifest.write_text(json.dumps([{"image": str(images[3]), "caption": "three"}]))
    assert_matches(ManifestPairs(manifest, TRANSFORM)[0], images[3], "three")


@pytest.mark.parametrize(
    ("name", "content", "where", "needle"),
    [
        ("bad.jsonl", '{"image": "a.png", "caption": "ok"}\n{"caption":\n', "line 2", "JSON"),
        ("nocap.csv", "image,text\na.png,hello\n", "line 1", "caption"),
        ("empty.csv", "image,caption\na.png,hello\nb.png,\n", "line 3", "empty 'caption'"),
        ("num.jsonl", '{"image": "a.png", "caption": 3}\n', "line 1", "must be a string"),
        ("nokey.jsonl", '{"image": "a.png"}\n', "line 1", "missing 'caption'"),
        ("none.csv", "image,caption\n", "", "no samples"),
        ("data.txt", "image,caption\n", "", "suffix"),
    ],
)
def test_bad_manifest_names_file_and_line(
    tmp_path: Path, name: str, content: str, where: str, needle: str
) -> None:
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError) as info:
        ManifestPairs(path, TRANSFORM)
    message = str(info.value)
    assert str(path) in message and where in message and needle in message


def test_undecodable_manifest_and_missing_manifest(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"image,caption\na.png,caf\xe9\n")
    with pytest.raises(DataError, match="UTF-8"):
        ManifestPairs(path)
    with pytest.raises(DataError, match="does not exist"):
        ManifestPairs(tmp_path / "nope.csv")


@pytest.fixture
def bad_manifest(tmp_path: Path, images: list[Path]) -> Path:
    """Rows 0-3 good; line 3 -> missing image, line 5 -> garbage bytes named .png."""
    (tmp_path / "imgs" / "garbage.png").write_bytes(b"this is not a png at all")
    rows = [("imgs/0.png", "zero"), ("imgs/gone.png", "gone"), ("imgs/1.png", "one")]
    rows += [("imgs/garbage.png", "garbage"), ("imgs/2.png", "two"), ("imgs/3.png", "three")]
    return write_csv(tmp_path / "data.csv", rows)


def test_missing_and_unreadable_images_raise_with_names(bad_manifest: Path) -> None:
    data = ManifestPairs(bad_manifest, TRANSFORM)
    with pytest.raises(DataError) as info:
        data[1]
    message = str(info.value)
    assert "missing image" in message and "gone.png" in message and "line 3" in message
    with pytest.raises(DataError) as info:
        data[3]
    assert "unreadable image" in str(info.value) and "garbage.png" in str(info.value)
    assert "line 5" in str(info.value) and "on_error=skip" in str(info.value)


def test_image_error_reaches_main_process_from_worker(bad_manifest: Path) -> None:
    data = ManifestPairs(bad_manifest, TRANSFORM)
    loader = torch.utils.data.DataLoader(data, batch_size=2, num_workers=2, collate_fn=collate_pairs)
    assert "gone.png" in loader_error(loader)


def test_skip_mode_counts_bad_images_through_workers(bad_manifest: Path) -> None:
    data = ManifestPairs(bad_manifest, TRANSFORM, on_error="skip")
    loader = torch.utils.data.DataLoader(data, batch_size=3, num_workers=2, collate_fn=collate_pairs)
    batches = list(loader)
    assert sum(b.skipped for b in batches) == 2
    assert [c for b in batches for c in b.captions] == ["zero", "one", "two", "three"]
    assert batches[0].pixels.shape == (2, 3, 16, 16)


def test_manifest_fingerprint_tracks_files(tmp_path: Path, images: list[Path]) -> None:
    manifest = write_csv(tmp_path / "data.csv", [(f"imgs/{i}.png", "x") for i in range(3)])
    first = ManifestPairs(manifest).fingerprint()
    assert ManifestPairs(manifest).fingerprint() == first
    images[1].write_bytes(png_bytes(make_image(99)) + b"\0")
    second = ManifestPairs(manifest).fingerprint()
    assert second != first
    write_csv(manifest, [(f"imgs/{i}.png", "y") for i in range(3)])
    assert ManifestPairs(manifest).fingerprint() != second


def test_collate_all_skipped() -> None:
    batch = collate_pairs([None, None])
    assert batch.skipped == 2 and batch.captions == [] and batch.pixels.numel() == 0


# -- WebDataset --------------------------------------------------------------------------------


def write_shards(folder: Path, corrupt: str | None = None) -> tuple[str, dict[str, Image.Image]]:
    """Two shards of 6 samples, captions half .txt, half .json; returns (pattern, caption -> image)."""
    expected = {}
    for shard in range(2):
        with wds.TarWriter(str(folder / f"data-{shard:03d}.tar")) as sink:
            for i in range(6):
                key = f"s{shard}_{i:02d}"
                image, caption = make_image(shard * 10 + i), f"caption {key}"
                sample = {"__key__": key, "png": png_bytes(image)}
                if i % 2:
                    sample["json"] = json.dumps({"caption": caption}).encode()
                else:
                    sample["txt"] = caption.encode()
                if key == corrupt:
                    sample["png"] = b"\x89PNG garbage"
                else:
                    expected[caption] = image
                sink.write(sample)
    return str(folder / "data-{000..001}.tar"), expected


def check_samples(items: list, expected: dict[str, Image.Image]) -> None:
    captions = [caption for _, caption in items]
    assert len(captions) == len(set(captions)) == len(expected)
    assert set(captions) == set(expected)
    for pixels, caption in items:
        assert torch.equal(pixels, torch.from_numpy(preprocess_image(expected[caption], SPEC)))


def test_webdataset_reads_all_samples(tmp_path: Path) -> None:
    pattern, expected = write_shards(tmp_path)
    check_samples(list(WebDatasetPairs(pattern, TRANSFORM)), expected)
    shuffled = list(WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=4, seed=1))
    check_samples(shuffled, expected)


def test_webdataset_workers_split_shards_without_duplicates(tmp_path: Path) -> None:
    pattern, expected = write_shards(tmp_path)
    loader = torch.utils.data.DataLoader(
        WebDatasetPairs(pattern, TRANSFORM), batch_size=4, num_workers=2, collate_fn=collate_pairs
    )
    batches = list(loader)
    items = [(p, c) for b in batches for p, c in zip(b.pixels, b.captions, strict=True)]
    check_samples(items, expected)


def test_webdataset_corrupt_image_raises_through_worker(tmp_path: Path) -> None:
    pattern, _ = write_shards(tmp_path, corrupt="s1_03")
    loader = torch.utils.data.DataLoader(
        WebDatasetPairs(pattern, TRANSFORM), batch_size=4, num_workers=2, collate_fn=collate_pairs
    )
    message = loader_error(loader)
    assert "data-001.tar" in message and "'s1_03'" in message and "undecodable image" in message


def test_webdataset_skip_counts_corrupt_and_incomplete_samples(tmp_path: Path) -> None:
    pattern, expected = write_shards(tmp_path, corrupt="s0_02")
    with wds.TarWriter(str(tmp_path / "extra.tar")) as sink:
        sink.write({"__key__": "nocap", "png": png_bytes(make_image(7))})
    urls = [*wds.shardlists.expand_urls(pattern), str(tmp_path / "extra.tar")]
    with pytest.raises(DataError, match=r"extra\.tar sample 'nocap' has no caption"):
        list(WebDatasetPairs(str(tmp_path / "extra.tar"), TRANSFORM))
    items = list(WebDatasetPairs(urls, TRANSFORM, on_error="skip"))
    batch = collate_pairs(items)
    assert batch.skipped == 2 and set(batch.captions) == set(expected)


def test_webdataset_broken_shard_and_missing_shard(tmp_path: Path) -> None:
    pattern, _ = write_shards(tmp_path)
    shard = tmp_path / "data-001.tar"
    shard.write_bytes(shard.read_bytes()[:700])  # truncated mid-member
    with pytest.raises(DataError, match=r"shard .*data-001\.tar \(ReadError"):
        list(WebDatasetPairs(pattern, TRANSFORM))
    with pytest.warns(UserWarning, match=r"data-001\.tar .*skipping the rest of this shard"):
        assert len(list(WebDatasetPairs(pattern, TRANSFORM, on_error="skip"))) == 6
    with pytest.raises(DataError, match=r"data-002\.tar does not exist \(8 of 10"):
        WebDatasetPairs(str(tmp_path / "data-{000..009}.tar"), TRANSFORM)


def test_webdataset_fingerprint_tracks_shards(tmp_path: Path) -> None:
    pattern, _ = write_shards(tmp_path)
    first = webdataset_fingerprint(pattern)
    assert webdataset_fingerprint(pattern) == first
    assert webdataset_fingerprint(str(tmp_path / "data-{000..000}.tar")) != first
    shard = tmp_path / "data-000.tar"
    shard.write_bytes(shard.read_bytes() + b"\0" * 512)
    assert webdataset_fingerprint(pattern) != first


def test_webdataset_splits_shards_across_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pattern, expected = write_shards(tmp_path)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    captions = {caption for _, caption in WebDatasetPairs(pattern, TRANSFORM)}
    assert captions == {c for c in expected if c.startswith("caption s1_")}


def test_readers_pickle_for_spawned_workers(tmp_path: Path, images: list[Path]) -> None:
    pattern, _ = write_shards(tmp_path)
    manifest = write_csv(tmp_path / "data.csv", [("imgs/0.png", "zero")])
    readers = (WebDatasetPairs(pattern, TRANSFORM, shuffle_buffer=2), ManifestPairs(manifest, TRANSFORM))
    for dataset in readers:
        clone = pickle.loads(pickle.dumps(dataset))
        assert len(list(clone)) >= 1
