"""Pascal VOC's layout, which the detection and segmentation readers share: a VOCdevkit root
holding VOC<year>/ folders, their ImageSets lists, the 20 class names and the masks' ignore
value."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gdrq_bench.config.errors import DataError

VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
    "tvmonitor",
)  # fmt: skip
# A mask's value on pixels no metric or loss counts (VOC's object outlines, and padding).
IGNORE_INDEX = 255


def year_folders(root: Path, years: Sequence[str] | str) -> list[Path]:
    """The VOC<year> folder of each year under the VOCdevkit `root`, which must exist."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"VOC root {root} does not exist; expected VOCdevkit holding VOC<year>/")
    years = [years] if isinstance(years, str) else list(years)
    if not years:
        raise ValueError("years is empty; name at least one VOC year")
    return [root / f"VOC{year}" for year in years]


def read_image_set(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"VOC image set {path} does not exist")
    # a per-class set has "<stem> <1|0|-1>" lines; the stem is always first
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
