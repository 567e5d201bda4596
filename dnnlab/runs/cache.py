"""The cache folder (`$DNNLAB_CACHE`): where it is, whether it can be written and is private,
and whether compiled programs are kept.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Optional

if TYPE_CHECKING:  # numpy is imported where checkpoints are read or written: the CLI starts without it
    pass


def cache_root() -> Path:
    """Where dnnlab keeps what it can recompute (the reference models, compiled programs):
    `$DNNLAB_CACHE`, else `~/.cache/dnnlab`. It must be private to the user: the compiled
    programs are executable (docs/security.md; `cache_exposure`)."""
    return Path(os.environ.get("DNNLAB_CACHE") or Path("~/.cache/dnnlab").expanduser())


_CACHE_PROBLEMS: dict[str, Optional[str]] = {}


def cache_problem() -> Optional[str]:
    """Why `cache_root()` cannot be used (it cannot be created or written), or None; checked once
    per folder in a process. Where it cannot, compiled programs and references are not kept
    (`train.use_compile_cache`, `stored.folder`) and the runs go on."""
    root = cache_root()
    if str(root) not in _CACHE_PROBLEMS:
        try:
            root.mkdir(mode=0o700, parents=True, exist_ok=True)  # private: it holds executable programs
            fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=root)
            os.close(fd)
            os.unlink(probe)
            _CACHE_PROBLEMS[str(root)] = None
        except OSError as exc:
            _CACHE_PROBLEMS[str(root)] = (
                f"the cache folder {root} cannot be written ({exc.strerror or exc}): compiled programs and linear "
                "references are not kept, so each run compiles and fits them again; set DNNLAB_CACHE to a writable folder"
            )
    return _CACHE_PROBLEMS[str(root)]


def cache_exposure() -> Optional[str]:
    """Why the cache folder is not private to this user, or None: it, or its folder of compiled
    programs, belongs to another user or can be written by the group or by anyone. The programs
    kept there are executable (the program store unpickles them, JAX loads them as compiled), so
    whoever can write them runs code as this user: where the folder is not private, compiled
    programs are neither loaded nor kept (`compiled_cache_off`); the runs go on without them."""
    root = cache_root()
    for folder in (root, root / "programs", root / "xla"):
        try:
            st = folder.stat()
        except OSError:
            continue
        who = ("another user owns it" if st.st_uid != os.getuid() else
               "anyone can write it" if st.st_mode & 0o002 else "its group can write it" if st.st_mode & 0o020 else None)
        if who is not None:
            return (
                f"the cache folder {folder} is not private ({who}): the compiled programs kept there are executable, so "
                f"they are not loaded or kept; make it yours alone (chmod 700 {folder}) or set DNNLAB_CACHE to a private "
                "folder (docs/security.md)"
            )
    return None


def compiled_cache_off() -> bool:
    """Whether compiled programs are not kept on disk (JAX's cache and dnnlab's store): with
    DNNLAB_NO_COMPILE_CACHE=1, when the cache folder cannot be written (`cache_problem`), or when
    it is not private (`cache_exposure`)."""
    return (os.environ.get("DNNLAB_NO_COMPILE_CACHE", "") not in ("", "0") or cache_problem() is not None
            or cache_exposure() is not None)
