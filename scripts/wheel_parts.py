"""Split files into parts of at most N MiB, and join them back: how wheels travel to an offline GPU
machine whose file transfer takes at most 64 MiB per call.

    python scripts/wheel_parts.py split .gpu-wheelhouse --mib 60   # big.whl -> big.whl.part-00, -01, ...
    python scripts/wheel_parts.py join .gpu-wheelhouse             # the parts -> big.whl (sha256 checked)

``split`` writes ``<file>.sha256`` beside the parts; ``join`` refuses a file whose parts are missing or
whose hash differs, and removes the parts only after the joined file checks out.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

SUFFIX = ".part-"


def _sha256(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def split(folder: Path, mib: int) -> list[Path]:
    """Split every file in ``folder`` larger than ``mib`` MiB; returns the files split."""
    limit = mib << 20
    done = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and SUFFIX not in p.name):
        if path.suffix == ".sha256" or path.stat().st_size <= limit:
            continue
        (folder / f"{path.name}.sha256").write_text(_sha256(path) + "\n")
        with open(path, "rb") as source:
            for index, block in enumerate(iter(lambda: source.read(limit), b"")):
                (folder / f"{path.name}{SUFFIX}{index:02d}").write_bytes(block)
        path.unlink()
        done.append(path)
    return done


def join(folder: Path) -> list[Path]:
    """Join every ``<file>.part-NN`` series in ``folder`` into ``<file>``; returns the files joined."""
    names = sorted({p.name.split(SUFFIX)[0] for p in folder.iterdir() if SUFFIX in p.name})
    joined = []
    for name in names:
        parts = sorted(folder.glob(f"{name}{SUFFIX}*"))
        numbers = [int(p.name.rsplit(SUFFIX, 1)[1]) for p in parts]
        if numbers != list(range(len(parts))):
            raise SystemExit(f"{name}: parts {numbers} are not 00..{len(parts) - 1:02d}: some did not arrive")
        target = folder / name
        with open(target, "wb") as out:
            for part in parts:
                out.write(part.read_bytes())
        expected = (folder / f"{name}.sha256").read_text().strip()
        if _sha256(target) != expected:
            target.unlink()
            raise SystemExit(
                f"{name}: the joined file's sha256 differs from the original's: send the parts again"
            )
        for part in parts:
            part.unlink()
        joined.append(target)
    return joined


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["split", "join"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--mib", type=int, default=60, help="largest part (split)")
    args = parser.parse_args()
    files = split(args.folder, args.mib) if args.action == "split" else join(args.folder)
    print(f"{args.action}: {', '.join(p.name for p in files) or 'nothing to do'}", file=sys.stderr)


if __name__ == "__main__":
    main()
