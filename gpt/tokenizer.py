"""Tokenizers: the course's characters, and byte-level BPE for comparison (task 07's --tokenizer bpe).

Both turn text into ids and back, say how to rebuild themselves from a checkpoint (`to_dict`), and
give a `stream_decoder()` that turns a stream of ids into text as they arrive.
"""

import codecs

from .errors import UserError


class CharTokenizer:
    """Maps characters to integer ids and back; the vocabulary is the sorted set of characters."""

    def __init__(self, vocab: str):
        self.vocab = vocab  # a string holding each character once, in id order
        self.stoi = {ch: i for i, ch in enumerate(vocab)}
        self.itos = dict(enumerate(vocab))

    @classmethod
    def from_text(cls, text: str) -> "CharTokenizer":
        return cls("".join(sorted(set(text))))

    @property
    def vocab_size(self) -> int:
        return len(self.vocab)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[ch] for ch in text]
        except KeyError:
            unknown = sorted(set(text) - self.stoi.keys())
            raise UserError(
                f"the text has {len(unknown)} character(s) outside the vocabulary: "
                f"{', '.join(repr(ch) for ch in unknown)}; use only characters the model was trained on"
            ) from None

    def decode(self, ids) -> str:
        return "".join(self.itos[int(i)] for i in ids)

    def token_texts(self, ids) -> list[str]:
        """What each token spells, for labelling pictures."""
        return [self.itos[int(i)] for i in ids]

    def stream_decoder(self):
        return lambda token: self.itos[token]

    def to_dict(self) -> dict:
        return {"kind": "char", "vocab": self.vocab}


def bytes_to_symbols() -> dict[int, str]:
    """The printable stand-in byte-level BPE uses for each byte, so that every byte is one symbol:
    printable Latin-1 bytes stand for themselves, the others (space, newline, control bytes) for
    the characters from U+0100 on, in byte order (the convention of GPT-2 and Hugging Face)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in printable]
    return {**{b: chr(b) for b in printable}, **{b: chr(256 + i) for i, b in enumerate(others)}}


class BPETokenizer:
    """Byte-level BPE (Sennrich et al. 2016, https://arxiv.org/abs/1508.07909; bytes as in GPT-2):
    start from the bytes the text holds and merge the most frequent adjacent pair, over and over,
    until the vocabulary has vocab_size tokens. Trained and run by Hugging Face `tokenizers`.

    The alphabet is the text's own bytes, not all 256 (as GPT-2's is): a byte the text never holds
    would be a token the model must learn never to write, and one it writes anyway is half a
    character, printed as U+FFFD. Text with a byte outside the alphabet is refused, naming its
    characters, as the character tokenizer refuses an unknown character."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        symbol_to_byte = {s: b for b, s in bytes_to_symbols().items()}
        self.token_bytes = [bytes(symbol_to_byte[s] for s in tokenizer.id_to_token(i))
                            for i in range(tokenizer.get_vocab_size())]
        self.alphabet = {t[0] for t in self.token_bytes if len(t) == 1}  # all 256 in an older checkpoint's tokenizer

    @classmethod
    def train(cls, text: str, vocab_size: int, alphabet_text: str | None = None) -> "BPETokenizer":
        """Merges learnt from text; the alphabet is the bytes of alphabet_text (default: text)."""
        symbols = bytes_to_symbols()
        alphabet = sorted({symbols[b] for b in (text if alphabet_text is None else alphabet_text).encode("utf-8")})
        if vocab_size < len(alphabet):
            raise UserError(f"the text holds {len(alphabet)} different bytes, each a token of the vocabulary: "
                            f"--vocab-size must be at least {len(alphabet)} (got {vocab_size})")
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tokenizer.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, initial_alphabet=alphabet, show_progress=False)
        tokenizer.train_from_iterator([text], trainer)
        return cls(tokenizer)

    @classmethod
    def from_json(cls, json: str) -> "BPETokenizer":
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_str(json))

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        unknown = sorted(ch for ch in set(text) if not self.alphabet.issuperset(ch.encode("utf-8")))
        if unknown:  # the trained tokenizer would drop them without a word
            raise UserError(
                f"the text has {len(unknown)} character(s) outside the vocabulary: "
                f"{', '.join(repr(ch) for ch in unknown)}; use only characters the model was trained on"
            )
        return self.tokenizer.encode(text).ids

    def decode(self, ids) -> str:
        return b"".join(self.token_bytes[int(i)] for i in ids).decode("utf-8", errors="replace")

    def token_texts(self, ids) -> list[str]:
        return [self.token_bytes[int(i)].decode("utf-8", errors="replace") for i in ids]

    def stream_decoder(self):
        """Text as tokens arrive: a character split across two tokens is printed once both have come."""
        utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        return lambda token: utf8.decode(self.token_bytes[token])

    def to_dict(self) -> dict:
        return {"kind": "bpe", "json": self.tokenizer.to_str()}


def tokenizer_from_dict(d: dict):
    """The tokenizer a checkpoint describes."""
    if d.get("kind") == "bpe":
        return BPETokenizer.from_json(d["json"])
    return CharTokenizer(d["vocab"])
