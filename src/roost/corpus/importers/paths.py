"""Which paths an import opens: only regular files (and folders to search). Used by `roost ingest` when it
searches a folder for exports and by the importers that read an unpacked archive folder (X, Mastodon).

A FIFO, socket or device is never opened (opening a FIFO waits for a writer for ever, a device can be endless).
Inside a folder roost searches, or an unpacked archive, a symbolic link is not followed: an export is data from
elsewhere, and a link in it could pull any file the operator can read into the corpus. A path the operator names
on the command line is followed if it is a link (their choice), but must still be a regular file or a folder.
"""

from __future__ import annotations

import stat
from pathlib import Path


def refusal(path: Path, follow: bool = False) -> str | None:
    """Why `path` is not opened (None: a regular file or a folder); `follow`: look through a symbolic link."""
    try:
        mode = (path.stat() if follow else path.lstat()).st_mode
    except OSError as e:
        return f"cannot be read ({e.strerror or type(e).__name__})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISLNK(mode):
        return "a symbolic link: links inside a folder are not followed (name the file on the command line to read it)"
    kind = (
        "a FIFO"
        if stat.S_ISFIFO(mode)
        else "a socket"
        if stat.S_ISSOCK(mode)
        else "a device"
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
        else "a special file"
    )
    return f"not a regular file ({kind}); roost does not open it"


def refusal_inside(root: Path, path: Path) -> str | None:
    """Why `path`, found under `root`, is not opened: it, or a folder between `root` and it, is a link or special."""
    at = root
    for part in path.relative_to(root).parts:
        at = at / part
        why = refusal(at)
        if why is not None:
            return why if at == path else f"{at.name} on its path is {why}"
    return None
