"""Tiny Shakespeare: download (once, verified), split 90/10, and sample training batches."""

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .errors import UserError
from .files import atomic_write
from .tokenizer import BPETokenizer, CharTokenizer

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_NAME = "data/input.txt"  # the default --data: the repository's data/input.txt, from any folder
DEFAULT_PATH = Path(__file__).resolve().parent.parent / DEFAULT_NAME


def _where_to_put_it(path: Path) -> str:
    return (
        f"Download {URL}\n"
        f"and save it as {path} (sha256 {SHA256}), then run the script again."
    )


def download(path: Path, url: str = URL, sha256: str = SHA256, opener=urllib.request.urlopen) -> None:
    """Fetch url into path, with a progress bar; the file appears only if its hash matches."""
    try:
        digest = hashlib.sha256()
        with atomic_write(path) as out, opener(url) as response:  # the cache is either absent or complete
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, desc=f"downloading {path.name}",
                      disable=None) as bar:
                while chunk := response.read(1 << 16):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
            if digest.hexdigest() != sha256:
                raise UserError(
                    f"the file downloaded from {url} has sha256 {digest.hexdigest()}, expected {sha256}.\n"
                    + _where_to_put_it(path)
                )
    except (urllib.error.URLError, OSError) as e:
        raise UserError(f"could not download Tiny Shakespeare ({e}).\n" + _where_to_put_it(path)) from None


def is_tiny_shakespeare(path) -> bool:
    """Whether path names the default text (None, the default name, or the file itself)."""
    return path is None or str(path) == DEFAULT_NAME or Path(path).resolve() == DEFAULT_PATH


def load_text(path=None, url: str = URL, opener=urllib.request.urlopen) -> str:
    """The training text: `path` if given, else Tiny Shakespeare from the cache (downloaded if missing)."""
    if is_tiny_shakespeare(path):
        path = DEFAULT_PATH
        if not path.exists():
            download(path, url, SHA256, opener=opener)
        raw = path.read_bytes()
        if hashlib.sha256(raw).hexdigest() != SHA256:
            raise UserError(
                f"{path} is not the expected Tiny Shakespeare (sha256 mismatch): it may be truncated or edited.\n"
                f"Delete it to download it again, or: " + _where_to_put_it(path)
            )
    else:
        path = Path(path)
        if not path.is_file():
            raise UserError(f"no data file at {path}: pass --data with the path of a text file")
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not UTF-8 text ({e}); pass --data with a plain text file") from None
    if len(text) < 2:
        raise UserError(f"{path} holds {len(text)} character(s): a language model needs more text than that")
    return text


def train_val_split(ids, train_fraction: float = 0.9):
    """The first 90% for training, the rest for validation: of token ids, or of a text's characters."""
    n = int(train_fraction * len(ids))
    return ids[:n], ids[n:]


@dataclass
class Dataset:
    """A text made into token ids, split 90/10 into training and validation."""
    tokenizer: object
    train: torch.Tensor  # (N_train,) token ids
    val: torch.Tensor  # (N_val,) token ids
    val_chars: int  # characters of text the validation tokens spell


def load_dataset(path=None, tokenizer: str = "char", vocab_size: int = 512) -> Dataset:
    """The text at path (Tiny Shakespeare by default), tokenized and split.

    char: the course's tokenizer, whose vocabulary is every character of the text. bpe: byte-level BPE
    with vocab_size tokens, its merges learnt from the training split only, so that nothing of the
    validation text leaks into them; its alphabet is every byte of the text, as char's vocabulary is
    every character of it (so that the validation split can be encoded); the split is then made on
    characters, at the same place as for char.
    """
    text = load_text(path)
    if tokenizer == "bpe":
        train_text, val_text = train_val_split(text)  # on characters: where the character split is
        bpe = BPETokenizer.train(train_text, vocab_size, alphabet_text=text)
        return Dataset(bpe, as_ids(bpe.encode(train_text)), as_ids(bpe.encode(val_text)), len(val_text))
    chars = CharTokenizer.from_text(text)
    train_ids, val_ids = train_val_split(as_ids(chars.encode(text)))
    return Dataset(chars, train_ids, val_ids, len(val_ids))


def as_ids(ids: list[int]) -> torch.Tensor:
    return torch.tensor(ids, dtype=torch.long)


def get_batch(data: torch.Tensor, batch_size: int, block_size: int, generator=None):
    """Random windows of the data: x is (B, T) and y is x shifted one step to the left."""
    if len(data) <= block_size:
        raise UserError(
            f"a split of {len(data)} tokens is too short for block_size {block_size}: "
            f"use more text or a smaller --block-size"
        )
    ix = torch.randint(len(data) - block_size, (batch_size,), generator=generator)  # (B,)
    window = ix[:, None] + torch.arange(block_size + 1)  # (B, T+1) indices, no Python loop
    chunk = data[window]  # (B, T+1)
    return chunk[:, :-1], chunk[:, 1:]  # (B, T), (B, T)
