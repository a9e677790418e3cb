"""The worst examples of an image task as thumbnails: read by example index, written as small PNGs.

The builder reads each listed example's image from the dataset's image column (the result's
``options["image_column"]``) and keeps it in the in-memory report as a PNG (base64, key
``image_png`` of the row) beside its relative path (``image``, ``examples/<index>.png``). The writer
saves the PNG at that path and drops the bytes, so ``report.json`` keeps the example index and the
thumbnail's relative path only; ``report.md`` embeds the thumbnails.
"""

from __future__ import annotations

import base64
import io
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["THUMBNAIL_PX", "add_thumbnails", "thumbnail", "write_thumbnails"]

#: The longest side of a thumbnail, in pixels (the other side keeps the image's aspect ratio).
THUMBNAIL_PX = 96
#: The folder of the thumbnails, relative to the report's folder.
EXAMPLES_DIR = "examples"


def thumbnail(image: Any, size: int = THUMBNAIL_PX) -> Any:
    """The RGB image resized (bilinear) so that its longest side is ``size`` pixels."""
    from PIL import Image

    rgb = image.convert("RGB")
    width, height = rgb.size
    scale = size / max(width, height)
    shape = (max(1, round(width * scale)), max(1, round(height * scale)))
    return rgb.resize(shape, Image.Resampling.BILINEAR)


def add_thumbnails(rows: Sequence[dict[str, Any]], dataset: Any, image_column: str, notes: list[str]) -> None:
    """Adds ``image`` (relative path) and ``image_png`` (base64 PNG) to each worst-example row, in place.

    The rows' ``index`` is the example index in ``dataset``; ``text`` is set to None (an image has none).
    A dataset whose images cannot be read leaves the rows as they are and says why in ``notes``.
    """
    if not rows:
        return
    from ..extraction.tasks.image_inputs import ImageSource

    try:
        images, _ = ImageSource(dataset, image_column=image_column).batch([int(r["index"]) for r in rows])
    except (KeyError, TypeError, IndexError, ValueError, OSError) as err:
        notes.append(f"Thumbnails not read from the dataset's {image_column!r} column ({type(err).__name__}: {err}).")
        return
    for row, image in zip(rows, images, strict=True):
        buffer = io.BytesIO()
        thumbnail(image).save(buffer, format="PNG")
        row["text"] = None
        row["image"] = f"{EXAMPLES_DIR}/{int(row['index'])}.png"
        row["image_png"] = base64.b64encode(buffer.getvalue()).decode("ascii")


def write_thumbnails(report: Mapping[str, Any], out_dir: str | os.PathLike[str] | None) -> dict[str, Any]:
    """Saves the report's thumbnails under ``out_dir`` (None: nowhere) and returns the report without their bytes."""
    errors = report.get("errors")
    if not isinstance(errors, Mapping) or not any("image_png" in r for r in errors.get("top_disagreements") or []):
        return dict(report)
    rows = []
    for row in errors["top_disagreements"]:
        row = dict(row)
        data = row.pop("image_png", None)
        if data is not None and out_dir is not None:
            path = Path(out_dir) / row["image"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(base64.b64decode(data))
        rows.append(row)
    return {**report, "errors": {**errors, "top_disagreements": rows}}
