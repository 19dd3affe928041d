"""Tiny Shakespeare: the text, split 90/10 into training and validation, tokenized, and sampled in
random windows (the lecture's batches).

The text is data/input.txt in the repository; a task script downloads it there the first time
(course/download.py), and any text file works instead (`--data my.txt`).
"""

from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import UserError
from .tokenizer import BPETokenizer, CharTokenizer

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
DEFAULT_NAME = "data/input.txt"  # the default --data: the repository's data/input.txt, from any folder
DEFAULT_PATH = Path(__file__).resolve().parent.parent / DEFAULT_NAME


def is_tiny_shakespeare(path) -> bool:
    """Whether path names the default text (None, the default name, or the file itself)."""
    return path is None or str(path) == DEFAULT_NAME or Path(path).resolve() == DEFAULT_PATH


def load_text(path=None) -> str:
    """The training text: the file at path, or Tiny Shakespeare's data/input.txt by default."""
    path = DEFAULT_PATH if is_tiny_shakespeare(path) else Path(path)
    if not path.is_file():
        if path == DEFAULT_PATH:
            raise UserError(f"Tiny Shakespeare is not at {path} yet: any task script downloads it (python task01.py), "
                            f"or save {URL} there yourself")
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
