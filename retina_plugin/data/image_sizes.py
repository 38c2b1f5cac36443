"""
The images of a dataset checked before the run, from their file headers: a file that is
missing or whose header cannot be read, a size that differs from the json's width/height
(Detectron2's mapper would stop at that sample with SizeMismatchError), and an image that the
resize (Detectron2's ResizeShortestEdge rule) would shrink to a side of 0 px (PIL's resize
fails there). Such an image is refused rather than resized to 1 px: a 1 px strip holds no box
of even one pixel, so it would train as background only, and its file is most likely wrong.

Sizes are read from headers only (`Image.open(...).size` decodes no pixels), in a thread
pool, and kept in `.retina_image_sizes.json` in each image folder, keyed by file name, byte
size and modification time, so registering the dataset again reads no file.
"""
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

from PIL import Image
from detectron2.data.transforms import ResizeShortestEdge

__all__ = ["CACHE_NAME", "ImageProblem", "image_sizes", "image_problems", "summarize_problems"]

CACHE_NAME = ".retina_image_sizes.json"
_EXIF_ORIENTATION = 274
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)  # transpose / rotate 90: width and height trade places
_WORKERS = 16  # header reads wait on the disk, not the CPU

# (short edges the resize may pick, max size) of INPUT.MIN_SIZE_* / MAX_SIZE_*.
Resize = Tuple[Sequence[int], int]


class ImageProblem(NamedTuple):
    """An image that cannot be used as its dataset says."""

    kind: str  # "missing", "unreadable", "size" (not the json's) or "0 px" (after the resize)
    file_name: str
    message: str  # one line naming the file


def _oriented_size(image: Image.Image) -> Tuple[int, int]:
    """
    (width, height) as Detectron2's read_image returns the image: its `_apply_exif_orientation`
    transposes for EXIF orientations 5-8. A PNG's getexif() decodes the pixels when the header
    has no eXIf chunk, so for PNG only the header's chunk is read.
    """
    width, height = image.size
    try:
        if image.format == "PNG":
            exif = Image.Exif()
            if "exif" in image.info:
                exif.load(image.info["exif"])
        else:
            exif = image.getexif()
        orientation = exif.get(_EXIF_ORIENTATION)
    except Exception:  # Detectron2 ignores an unreadable EXIF block the same way
        orientation = None
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def _read_header(path: str) -> Union[Tuple[int, int], str]:
    """(width, height) of the image at `path`, or why it cannot be read."""
    try:
        with Image.open(path) as image:
            return _oriented_size(image)
    except Exception as e:  # PIL raises many types for broken headers (SyntaxError among them)
        return f"{type(e).__name__}: {e}"


def _load_cache(folder: str) -> dict:
    try:
        with open(os.path.join(folder, CACHE_NAME), encoding="utf-8") as f:
            entries = json.load(f)
        return entries if isinstance(entries, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_cache(folder: str, entries: dict):
    """Write atomically (parallel ranks may write the same folder); a read-only folder keeps no cache."""
    path = os.path.join(folder, CACHE_NAME)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as f:
            json.dump(entries, f)
        os.replace(temporary, path)
    except OSError:
        try:
            os.remove(temporary)
        except OSError:
            pass


def image_sizes(paths: Sequence[str]) -> Dict[str, Union[Tuple[int, int], str]]:
    """
    For each path, its (width, height) after EXIF orientation, or a one-line reason it cannot
    be read ("does not exist", a PIL error). Cached sizes are used when byte size and mtime match.
    """
    result, to_read, stats, caches = {}, [], {}, {}
    for path in dict.fromkeys(paths):
        try:
            st = os.stat(path)
        except OSError:
            result[path] = "does not exist"
            continue
        folder, name = os.path.split(path)
        if folder not in caches:
            caches[folder] = _load_cache(folder)
        cache = caches[folder]
        stats[path] = [st.st_size, st.st_mtime_ns]
        entry = cache.get(name)
        if isinstance(entry, list) and len(entry) == 4 and entry[:2] == stats[path]:
            result[path] = (entry[2], entry[3])
        else:
            to_read.append(path)
    read = {}
    if to_read:
        with ThreadPoolExecutor(min(_WORKERS, len(to_read))) as pool:
            read = dict(zip(to_read, pool.map(_read_header, to_read)))
    changed = set()
    for path, size in read.items():
        result[path] = size
        if isinstance(size, tuple):
            folder, name = os.path.split(path)
            caches[folder][name] = stats[path] + list(size)
            changed.add(folder)
    for folder in changed:
        _save_cache(folder, caches[folder])
    return result


def _resized_to_nothing(width: int, height: int, resize: Optional[Resize]) -> Optional[Tuple[int, int]]:
    """The (width, height) the resize gives, if a side is 0 px. The smallest short edge gives the smallest sides."""
    if resize is None:
        return None
    short_edges, max_size = resize
    short = min(short_edges)
    if short <= 0:  # Detectron2 does not resize at 0
        return None
    new_h, new_w = ResizeShortestEdge.get_output_shape(height, width, short, max_size)
    return (new_w, new_h) if min(new_w, new_h) < 1 else None


def image_problems(dicts: List[dict], *, json_file: str = "the dataset", resize: Optional[Resize] = None) -> List[ImageProblem]:
    """
    The problems of the images of `dicts` (Detectron2 dataset dicts with file_name and, where
    known, width and height); raster windows (geo datasets) are checked when read. `resize`
    is (INPUT.MIN_SIZE_*, INPUT.MAX_SIZE_*); `json_file` names where width/height came from.
    """
    files = [d for d in dicts if "raster_window" not in d]
    sizes = image_sizes([d["file_name"] for d in files])
    problems = []
    for d in files:
        path, size = d["file_name"], sizes[d["file_name"]]
        if size == "does not exist":
            problems.append(ImageProblem("missing", path, f"image {path} does not exist"))
        elif isinstance(size, str):
            problems.append(ImageProblem("unreadable", path, f"cannot read image {path}: {size}"))
        elif "width" in d and "height" in d and (d["width"], d["height"]) != size:
            problems.append(ImageProblem("size", path, (
                f"image {path} is {size[0]}x{size[1]} (width x height) but {d['width']}x{d['height']} in {json_file}")))
        elif _resized_to_nothing(*size, resize):
            new_w, new_h = _resized_to_nothing(*size, resize)
            problems.append(ImageProblem("0 px", path, (
                f"image {path} ({size[0]}x{size[1]}) is resized to {new_w}x{new_h} px by INPUT.MIN_SIZE {min(resize[0])}, "
                f"MAX_SIZE {resize[1]}: crop or tile it")))
    return problems


_KIND_WORDS = {"missing": "missing", "unreadable": "unreadable", "size": "of another size than the json says",
               "0 px": "resized to 0 px"}


def summarize_problems(problems: List[ImageProblem], total: int) -> str:
    """'3 of 700 images: 2 missing, 1 resized to 0 px; e.g. <the first message>'."""
    counts = Counter(p.kind for p in problems)
    kinds = ", ".join(f"{n} {_KIND_WORDS[kind]}" for kind, n in counts.items())
    return f"{len(problems)} of {total} images: {kinds}; e.g. {problems[0].message}"
