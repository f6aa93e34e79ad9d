"""Photo collections: the photos bundled inside the scikit-image wheel (no network needed), or
every image file under a user's directory (e.g. an ImageNet validation set).

A collection's fingerprint names its files with their sizes and modification times, so that a
scan cached for it is not reused once a file is added, removed or changed (the server lists its
collection once, when it is first asked: a change shows from its next start).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

# The natural photos that the scikit-image wheel itself contains (skimage.data fetches its other
# images from the network on first use; those are left out). motorcycle_right is left out too:
# it is motorcycle_left seen from a few centimetres away.
SCIKIT_IMAGE_PHOTOS = (
    "astronaut.png",
    "brick.png",
    "camera.png",
    "cell.png",
    "chelsea.png",
    "clock_motion.png",
    "coffee.png",
    "coins.png",
    "grass.png",
    "gravel.png",
    "hubble_deep_field.jpg",
    "ihc.png",
    "moon.png",
    "motorcycle_left.png",
    "page.png",
    "retina.jpg",
    "rocket.jpg",
    "text.png",
)
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True)
class Source:
    """One photo: how it is named to users, and where it is."""

    name: str
    path: Path


@dataclass(frozen=True)
class Collection:
    """The photos scanned for exemplars, in a fixed order."""

    name: str
    sources: tuple[Source, ...]

    @property
    def fingerprint(self) -> str:
        """sha256 of every file's name, size and modification time."""
        entries = []
        for source in self.sources:
            try:
                stat = source.path.stat()
                entries.append((source.name, stat.st_size, stat.st_mtime_ns))
            except OSError:
                entries.append((source.name, -1, -1))
        return hashlib.sha256(json.dumps([self.name, entries]).encode()).hexdigest()


class EmptyCollection(ValueError):
    """The collection has no photo that can be read: there is nothing to find exemplars in."""


def bundled_photos() -> Collection:
    """The natural photos inside the installed scikit-image package."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or spec.origin is None:
        raise EmptyCollection(
            "scikit-image is not installed: it ships the default exemplar photos "
            "(pip install scikit-image, or give --exemplars-dir)"
        )
    folder = Path(spec.origin).parent / "data"
    sources = tuple(
        Source(f"scikit-image/{name}", folder / name)
        for name in SCIKIT_IMAGE_PHOTOS
        if (folder / name).is_file()
    )
    return Collection("scikit-image photos", sources)


def directory(root: Path) -> Collection:
    """Every image file under `root` (recursively, by suffix), in path order."""
    if not root.is_dir():
        raise EmptyCollection(f"the exemplar collection {root} is not a directory")
    files = sorted(
        path for path in root.rglob("*") if path.suffix.lower() in IMAGE_SUFFIXES and path.is_file()
    )
    sources = tuple(Source(path.relative_to(root).as_posix(), path) for path in files)
    return Collection(str(root), sources)
