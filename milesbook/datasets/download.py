"""Downloads for the data scripts: a progress bar, resuming a partial file, and verification.

A file is downloaded to `<name>.part` and renamed only once its size and checksum match, so a file
without the suffix is always complete; re-running skips it.

Not `pooch`: it starts an interrupted download over instead of resuming the partial file with an HTTP
Range request (pinned by tests/test_download.py; CREMA-D is ~7.5 GB in 14,884 files), and it would
replace only the ~40 lines of `download` while adding a dependency.
"""
from __future__ import annotations

import hashlib
import json
import os
import urllib.request
from pathlib import Path

from tqdm.auto import tqdm

from ..errors import UserError


def md5sum(path, chunk: int = 1 << 20, algorithm: str = "md5") -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verify(path, size: int | None = None, md5: str | None = None, sha256: str | None = None) -> str | None:
    """None if `path` has the expected size and checksums (those given), else what is wrong."""
    path = Path(path)
    if not path.exists():
        return f"{path} is missing"
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"{path} has {actual} bytes, expected {size} (truncated or a different file)"
    if md5 is not None and md5sum(path) != md5:
        return f"{path} fails its md5 check (corrupted download)"
    if sha256 is not None and md5sum(path, algorithm="sha256") != sha256:
        return f"{path} fails its sha256 check (corrupted download)"
    return None


def fetch_text(url: str, timeout: float = 60) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.read().decode()
    except OSError as error:
        raise UserError(f"could not reach {url} ({error}); with the files already on disk, use --from DIR") from None


def lfs_pointer(text: str) -> dict:
    """The sha256 and size in a Git LFS pointer file ("oid sha256:<hex>" and "size <n>" lines)."""
    fields = dict(line.split(" ", 1) for line in text.strip().splitlines() if " " in line)
    return {"sha256": fields["oid"].removeprefix("sha256:"), "size": int(fields["size"])}


def fetch_json(url: str, timeout: float = 60) -> dict:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return json.load(response)
    except OSError as error:
        raise UserError(f"could not reach {url} ({error}); with the files already on disk, use --from DIR") from None


def download(url: str, dest, size: int | None = None, md5: str | None = None, progress: bool = True,
             timeout: float = 60, sha256: str | None = None) -> Path:
    """Download `url` to `dest` unless a verified copy is there; resume a `.part` file left by an
    interrupted run (HTTP Range). Raises UserError, removing the partial file, if verification fails."""
    dest = Path(dest)
    if dest.exists() and verify(dest, size, md5, sha256) is None:
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    start = part.stat().st_size if part.exists() else 0
    if size is not None and start > size:
        part.unlink()
        start = 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            if start and response.status != 206:  # the server ignored the range: start again
                start = 0
            total = size or (int(response.headers.get("Content-Length", 0)) + start) or None
            with open(part, "ab" if start else "wb") as f, \
                    tqdm(total=total, initial=start, unit="B", unit_scale=True, desc=dest.name,
                         **({} if progress else {"disable": True})) as bar:
                while block := response.read(1 << 20):
                    f.write(block)
                    bar.update(len(block))
    except OSError as error:
        raise UserError(f"download of {url} failed ({error}); re-run to resume, or use --from DIR") from None
    problem = verify(part, size, md5, sha256)
    if problem:
        part.unlink()
        raise UserError(f"{problem}; the partial file was removed — re-run to download {dest.name} again")
    os.replace(part, dest)
    return dest
