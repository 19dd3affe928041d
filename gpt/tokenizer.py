"""Character-level tokenizer: every distinct character of the corpus is one token."""

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
