"""The folder reader: images in one folder per class (or train/ and test/), resized and
converted to one channel count.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Optional

import numpy as np

from dnnlab.config import DataConfig
from dnnlab.data.dataset import DataError, Split
from dnnlab.data.files import (
    _encode_labels,
    _encode_test_labels,
    _given_path,
    _hold_out,
    _split_off,
    _test_note,
)

if TYPE_CHECKING:
    from dnnlab.data.dataset import Loaded


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# ------------------------------------------ folder


def _class_folders(root: Path, where: str) -> dict[str, list[Path]]:
    """class name -> its image files (sorted; searched recursively, hidden files and folders skipped)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        loose = sum(1 for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        raise DataError(
            f"{where}: {root} holds no class folders{f' ({loose} loose images)' if loose else ''}; put each class's "
            f"images in a folder of its own: {root}/<class>/*.png (or .jpg, .jpeg)"
        )
    out: dict[str, list[Path]] = {}
    for folder in folders:
        files = sorted(
            p for p in folder.rglob("*")
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise DataError(f"{folder}: the class folder holds no .png, .jpg or .jpeg image; add images or remove it")
        out[folder.name] = files
    return out


def _image_error(path: Path, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read the image ({type(exc).__name__}: {exc}); replace or delete it")


def _read_image_files(files: list[Path], cfg: DataConfig, size: Optional[tuple[int, int]]) -> tuple[np.ndarray, int]:
    """The images as uint8 (N, H, W, C) and C: the headers first (size and colour checks, naming the
    first odd file), then every file decoded in full, so that a truncated one is named too."""
    from PIL import Image  # Pillow: a dependency of matplotlib

    gray = {"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "I;16N"}
    from dnnlab.interrupt import stop_point  # a stop signal takes effect between files

    modes, sizes = [], []
    for f in files:
        stop_point()
        try:
            with Image.open(f) as im:
                modes.append(im.mode)
                sizes.append(im.size)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _image_error(f, exc) from None
    channels = cfg.channels or (1 if all(m in gray for m in modes) else 3)
    if size is None and cfg.image_size is None:
        w, h = sizes[0]
        for f, s in zip(files, sizes):
            if s != (w, h):
                raise DataError(
                    f"{f}: {s[0]}x{s[1]} pixels (width x height), but {files[0]} is {w}x{h}; every image must have the "
                    "same size: set data.image_size: [H, W] to resize them all"
                )
        size = (h, w)
    h, w = size if size is not None else tuple(cfg.image_size)  # type: ignore[misc]
    out = np.empty((len(files), h, w, channels), np.uint8)
    for i, f in enumerate(files):
        stop_point()
        try:
            with Image.open(f) as im:
                im.load()
                if im.mode == "F":
                    raise DataError(f"{f}: a floating-point image (mode F); save it as an 8- or 16-bit image")
                deep = im.mode == "I" or im.mode.startswith("I;16")  # 16-bit grayscale: Pillow's L would clip it
                if not deep:
                    im = im.convert("L" if channels == 1 else "RGB")
                if im.size != (w, h):
                    if cfg.image_size is None:  # a test image of another size than the training images
                        raise DataError(
                            f"{f}: {im.size[0]}x{im.size[1]} pixels (width x height), but the training images are "
                            f"{w}x{h}; set data.image_size: [H, W] to resize them all"
                        )
                    im = im.resize((w, h))
                pixels = np.asarray(im)
                if deep:  # 0..65535 -> 0..255
                    pixels = np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8)[..., None]
                    pixels = np.repeat(pixels, channels, axis=-1)
                out[i] = pixels.reshape(h, w, channels)
        except DataError:
            raise
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise _image_error(f, exc) from None
    return out, channels


def _load_folder(cfg: DataConfig) -> Loaded:
    """Images in one folder per class (root/<class>/*.png|jpg|jpeg), and root/train + root/test when
    both exist: read with Pillow, grayscale or RGB (data.channels), resized to data.image_size."""
    root = _given_path(cfg.path, "data.path", "a folder of class folders", folder=True)
    train_root, test_root = root, None
    has = {part: (root / part).is_dir() for part in ("train", "test")}
    if all(has.values()):
        train_root, test_root = root / "train", root / "test"
        if cfg.test_path:
            raise DataError(f"data.test_path: {root} holds its own test/ folder; remove data.test_path")
        if cfg.test_split is not None:
            raise DataError(f"data.test_split: {root} holds its own test/ folder; remove data.test_split")
    elif any(has.values()):
        one, other = ("train", "test") if has["train"] else ("test", "train")
        raise DataError(
            f"{root}: holds a {one}/ folder but no {other}/; the train/test layout needs both (else every folder "
            f"is a class): add {root / other}, or point data.path at {root / one}"
        )
    elif cfg.test_path:
        test_root = _given_path(cfg.test_path, "data.test_path", "a folder of class folders", folder=True)
    where = "data.path"
    train_files = _class_folders(train_root, where)
    class_of = np.asarray([c for c, files in train_files.items() for _ in files])
    files = [f for fs in train_files.values() for f in fs]
    ytr, names, classes = _encode_labels(class_of, str(train_root), lambda i: str(files[i]), strip=False)
    images, channels = _read_image_files(files, cfg, tuple(cfg.image_size) if cfg.image_size else None)  # type: ignore[arg-type]
    h, w = images.shape[1:3]
    if test_root is not None:
        test_files = _class_folders(test_root, "data.test_path" if cfg.test_path else where)
        extra = sorted(set(test_files) - set(train_files))
        if extra:
            raise DataError(
                f"{test_root / extra[0]}: the test class {extra[0]!r} has no training folder in {train_root} "
                f"(classes: {', '.join(names)}); a model cannot predict a class it never saw"
            )
        tfiles = [f for fs in test_files.values() for f in fs]
        tclass = np.asarray([c for c, fs in test_files.items() for _ in fs])
        yte = _encode_test_labels(tclass, classes, names, str(test_root), lambda i: str(tfiles[i]), strip=False)
        test_images, _ = _read_image_files(tfiles, cfg.model_copy(update={"channels": channels}), (h, w))
        xtr_img, xte_img = images, test_images
        note = f"test: {test_root}"
    else:
        (xtr_img, ytr), (xte_img, yte) = _split_off(images, ytr, _hold_out(ytr, cfg, str(train_root)))
        note = _test_note(cfg)
    flat = lambda a: a.reshape(len(a), -1).astype(np.float32) / 255.0  # noqa: E731
    source = f"{root} ({h}x{w}x{channels} images; {note})"
    reader = {"resize": cfg.image_size is not None, "class_values": [v.item() for v in classes]}
    return Split(flat(xtr_img), ytr, names, reader=reader), Split(flat(xte_img), yte), source, (h, w, channels)
