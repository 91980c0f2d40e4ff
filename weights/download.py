"""Download weight files: streamed, resumable, checked, renamed into place atomically.

Bytes go to `<dest>/<file>.part`; an interrupted transfer leaves that file,
and the next attempt (an automatic retry, or a later call) asks the server
for the rest with an HTTP Range request.  Only a complete file whose sha1
(when the registry knows it) and size match is renamed to its final name,
so a final name on disk always means a whole, verified file.
"""
from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from torchcaffe.errors import CaffeError
from torchcaffe.progress import progress as progress_bar
from weights.registry import REGISTRY, lookup

log = logging.getLogger(__name__)

CHUNK = 1 << 20
_TRANSIENT = (http.client.IncompleteRead, ConnectionError, socket.timeout, TimeoutError)


class DownloadError(CaffeError):
    """A download that could not complete; the message names the URL."""


def sha1_of(path: str | os.PathLike, chunk: int = CHUNK) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def download(name_or_url: str, dest_dir: str | os.PathLike = ".", *, sha1: str | None = None,
             size: int | None = None, retries: int = 3, timeout: float = 60.0,
             progress: bool = True) -> Path:
    """Fetch a registry entry (by name) or any URL into `dest_dir`; return the path.

    `sha1` / `size` override (or, for a URL, supply) the expected checksum and
    length.  An existing final file is kept when it verifies; a checksum or
    size failure deletes the partial download and raises DownloadError.
    """
    url, final_name, sha1, size = _resolve(name_or_url, sha1, size)
    dest = Path(dest_dir)
    dest.mkdir(parents=True, exist_ok=True)
    final = dest / final_name
    if final.exists():
        if sha1 is None or sha1_of(final) == sha1:
            log.info("%s already present%s", final, "" if sha1 is None else " (sha1 ok)")
            return final
        raise DownloadError(f"{final} exists but its sha1 is not {sha1} (expected for {url}); "
                            "delete it to download again")
    part = final.with_name(final.name + ".part")
    for attempt in range(retries + 1):
        try:
            if _fetch(url, part, timeout, progress):
                break
        except _TRANSIENT as exc:
            log.warning("transfer of %s interrupted (%s)", url, exc)
        if attempt < retries:
            log.info("resuming %s from byte %d (retry %d of %d)", url,
                     part.stat().st_size if part.exists() else 0, attempt + 1, retries)
    else:
        have = part.stat().st_size if part.exists() else 0
        raise DownloadError(f"download of {url} did not complete after {retries + 1} "
                            f"attempt(s); {have} bytes kept in {part}, run again to resume")
    _verify(part, url, sha1, size)
    os.replace(part, final)
    log.info("saved %s", final)
    return final


def _resolve(name_or_url: str, sha1, size) -> tuple[str, str, str | None, int | None]:
    """(url, file name, sha1, size): a registry name, or a URL (matched to the registry)."""
    if re.match(r"^[a-z][a-z0-9+.-]*://", name_or_url, re.IGNORECASE):
        url = name_or_url
        filename = urlsplit(url).path.rsplit("/", 1)[-1]
        if not filename:
            raise DownloadError(f"cannot tell a file name from the URL {url}")
        known = next((f for f in REGISTRY.values() if f.url == url), None)
    else:
        known = lookup(name_or_url)
        url, filename = known.url, known.filename
    if known is not None:
        sha1, size = sha1 or known.sha1, size or known.size
    return url, filename, sha1 and sha1.lower(), size


def _fetch(url: str, part: Path, timeout: float, progress: bool) -> bool:
    """Transfer what `part` still lacks; True when the server sent the whole rest."""
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "fcn-weights"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:
            # nothing left to send: complete if the server's length is ours
            total = re.fullmatch(r"bytes \*/(\d+)", exc.headers.get("Content-Range", ""))
            if total is None or int(total.group(1)) == offset:
                return True
            log.warning("%s is longer than %s; starting over", part, url)
            part.unlink()
            return False
        raise DownloadError(f"server answered {exc.code} {exc.reason} for {url}") from None
    except urllib.error.URLError as exc:
        raise DownloadError(f"cannot reach {url} ({exc.reason}); are you offline? "
                            f"You can also fetch it by hand into {part.parent}") from None
    with response:
        if offset and response.status != 206:
            log.info("%s does not resume partial downloads; starting over", url)
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        total = None if remaining is None else offset + remaining
        received = 0
        with open(part, "ab" if offset else "wb") as out, progress_bar(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress) as bar:
            while block := response.read(CHUNK):
                out.write(block)
                received += len(block)
                bar.update(len(block))
    if remaining is not None and received < remaining:
        log.warning("%s: connection closed after %d of %d bytes", url, received, remaining)
        return False
    return True


def _verify(part: Path, url: str, sha1: str | None, size: int | None) -> None:
    actual_size = part.stat().st_size
    if size is not None and actual_size != size:
        part.unlink()
        raise DownloadError(f"{url}: got {actual_size} bytes, expected {size}; "
                            "the partial file was removed")
    if sha1 is not None:
        actual = sha1_of(part)
        if actual != sha1:
            part.unlink()
            raise DownloadError(f"{url}: sha1 {actual} does not match the expected {sha1}; "
                                "the downloaded file was removed")
        log.info("sha1 ok: %s", actual)
