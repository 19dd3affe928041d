"""Tiny Shakespeare on the disk before a run reads it: downloaded once from char-rnn's repository,
checked against its sha256, and written atomically, so that data/input.txt is either absent or whole.
The lesson (gpt/data.py) only reads it."""

import hashlib
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from gpt.data import DEFAULT_PATH, SHA256, URL, is_tiny_shakespeare
from gpt.errors import UserError

from .files import atomic_write


def where_to_put_it(path: Path) -> str:
    return f"Download {URL}\nand save it as {path} (sha256 {SHA256}), then run the script again."


def download(path: Path, url: str = URL, sha256: str = SHA256, opener=urllib.request.urlopen) -> None:
    """Fetch url into path, with a progress bar; the file appears only if its hash matches."""
    try:
        digest = hashlib.sha256()
        with atomic_write(path) as out, opener(url) as response:  # the cache is either absent or complete
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {path.name}", disable=None) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != sha256:
                raise UserError(f"the file downloaded from {url} has sha256 {digest.hexdigest()}, expected {sha256}.\n"
                                + where_to_put_it(path))
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"could not download Tiny Shakespeare ({e}).\n" + where_to_put_it(path)) from None


def ensure_text(path=None, opener=urllib.request.urlopen) -> None:
    """Make sure the text a run reads is there: Tiny Shakespeare (path None or the default) is
    downloaded if missing and refused if it is not the expected file; any other path is the user's."""
    if not is_tiny_shakespeare(path):
        return
    path = DEFAULT_PATH
    if not path.exists():
        download(path, URL, SHA256, opener=opener)
    if hashlib.sha256(path.read_bytes()).hexdigest() != SHA256:
        raise UserError(f"{path} is not the expected Tiny Shakespeare (sha256 mismatch): it may be truncated or "
                        f"edited.\nDelete it to download it again, or: " + where_to_put_it(path))
