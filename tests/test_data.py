import hashlib
import os

import pytest
import torch

from gpt.data import SHA256, get_batch, load_dataset, load_text, train_val_split
from course.download import download
from gpt.errors import UserError
from course.files import atomic_write
from gpt.tokenizer import BPETokenizer, CharTokenizer


def test_tokenizer_round_trips_the_whole_corpus(corpus_text):
    tok = CharTokenizer.from_text(corpus_text)
    assert tok.vocab_size == 65
    assert tok.decode(tok.encode(corpus_text)) == corpus_text


def test_vocabulary_is_sorted_distinct_characters():
    tok = CharTokenizer.from_text("hello world")
    assert tok.vocab == " dehlorw"
    assert tok.encode("hello") == [3, 2, 4, 4, 5]


def test_unknown_character_is_named():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*|'é'"):
        tok.encode("abzé")
    with pytest.raises(UserError) as err:
        tok.encode("abzé")
    assert "'z'" in str(err.value) and "'é'" in str(err.value)


def test_split_sizes(corpus_text):
    data = load_dataset()
    assert len(corpus_text) == 1_115_394
    assert (len(data.train), len(data.val), data.val_chars) == (1_003_854, 111_540, 111_540)
    assert data.tokenizer.decode(data.train[:14].tolist()) == "First Citizen:"


def test_bpe_is_trained_on_the_training_split_only_and_splits_at_the_same_character(corpus_text):
    data = load_dataset(tokenizer="bpe", vocab_size=512)
    bpe = data.tokenizer
    assert bpe.vocab_size == 512
    cut = int(0.9 * len(corpus_text))
    assert bpe.decode(data.train.tolist()) == corpus_text[:cut]
    assert bpe.decode(data.val.tolist()) == corpus_text[cut:] and data.val_chars == len(corpus_text) - cut
    assert len(data.val) < 0.6 * data.val_chars, "512 tokens cover about two characters each"
    again = BPETokenizer.train(corpus_text[:cut], 512)
    assert again.to_dict() == bpe.to_dict(), "training is deterministic"
    with_val = BPETokenizer.train(corpus_text, 512)
    assert with_val.to_dict() != bpe.to_dict(), "the validation text would change the merges"


def test_bpe_round_trips_any_text_and_streams_a_split_character():
    text = "Zoë's naïve café — 東京\n"
    bpe = BPETokenizer.train("To be, or not to be: that is the question.\n" * 20 + text, 300)
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    decode = bpe.stream_decoder()
    pieces = [decode(i) for i in ids]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert bpe.to_dict()["kind"] == "bpe" and BPETokenizer.from_json(bpe.to_dict()["json"]).encode(text) == ids


def test_a_bpe_vocabulary_smaller_than_the_texts_bytes_is_refused():
    assert BPETokenizer.train("some text", 7).vocab_size == 7, "s, o, m, e, space, t, x"
    with pytest.raises(UserError, match=r"7 different bytes.*must be at least 7 \(got 6\)"):
        BPETokenizer.train("some text", 6)


def test_batch_shapes_and_shift():
    data = torch.arange(1000)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, batch_size=5, block_size=7, generator=g)
    assert x.shape == y.shape == (5, 7)
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)  # data is arange: the target is the next element
    assert int(x.max()) < 1000 and int(y.max()) < 1000


def test_batch_matches_the_lecture_sampler():
    """Index arithmetic picks exactly the windows the lecture's Python loop picks."""
    data = torch.randint(65, (500,))
    x, y = get_batch(data, 8, 6, torch.Generator().manual_seed(3))
    ix = torch.randint(len(data) - 6, (8,), generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, torch.stack([data[i:i + 6] for i in ix]))
    assert torch.equal(y, torch.stack([data[i + 1:i + 7] for i in ix]))


def test_split_too_short_for_block_size():
    with pytest.raises(UserError, match="block_size"):
        get_batch(torch.arange(5), 2, 8)


def test_train_val_split_is_90_10():
    train, val = train_val_split(torch.arange(100))
    assert len(train) == 90 and len(val) == 10 and int(val[0]) == 90


def test_download_caches_a_good_file(tmp_path):
    payload = b"To be, or not to be\n" * 100
    src = tmp_path / "remote.txt"
    src.write_bytes(payload)
    dest = tmp_path / "cache" / "input.txt"
    download(dest, src.as_uri(), hashlib.sha256(payload).hexdigest())
    assert dest.read_bytes() == payload
    assert list(dest.parent.iterdir()) == [dest]  # no temp file left behind


def test_download_with_wrong_hash_leaves_nothing(tmp_path):
    src = tmp_path / "remote.txt"
    src.write_bytes(b"not shakespeare")
    dest = tmp_path / "cache" / "input.txt"
    with pytest.raises(UserError) as err:
        download(dest, src.as_uri(), SHA256)
    assert "expected " + SHA256 in str(err.value) and str(dest) in str(err.value)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_download_offline_says_where_to_put_the_file(tmp_path):
    def offline(url):
        import urllib.error
        raise urllib.error.URLError("no network")

    dest = tmp_path / "input.txt"
    with pytest.raises(UserError, match="save it as"):
        download(dest, "https://example.invalid/input.txt", SHA256, opener=offline)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_default_file_is_refused(tmp_path, monkeypatch):
    import course.download as download_module
    fake = tmp_path / "input.txt"
    fake.write_text("half a file")
    monkeypatch.setattr(download_module, "DEFAULT_PATH", fake)
    with pytest.raises(UserError, match="sha256 mismatch"):
        download_module.ensure_text()


def test_missing_default_file_is_downloaded_and_then_read(tmp_path, monkeypatch):
    import urllib.request

    import course.download as download_module
    import gpt.data as data
    payload = b"Now is the winter of our discontent\n"
    src = tmp_path / "remote.txt"
    src.write_bytes(payload)
    dest = tmp_path / "data" / "input.txt"
    for module in (download_module, data):
        monkeypatch.setattr(module, "DEFAULT_PATH", dest)
    monkeypatch.setattr(download_module, "SHA256", hashlib.sha256(payload).hexdigest())
    monkeypatch.setattr(download_module, "URL", src.as_uri())
    with pytest.raises(UserError, match="any task script downloads it"):
        load_text()  # the lesson reads; it never downloads
    download_module.ensure_text(opener=urllib.request.urlopen)
    assert dest.read_bytes() == payload and load_text() == payload.decode()


def test_any_text_file_works_with_its_own_vocabulary(small_text_file):
    data = load_dataset(small_text_file)
    assert data.tokenizer.vocab == "".join(sorted(set(small_text_file.read_text())))
    assert len(data.train) + len(data.val) == len(small_text_file.read_text())


def test_missing_data_file_is_named(tmp_path):
    with pytest.raises(UserError, match="no data file at"):
        load_text(tmp_path / "nope.txt")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "kept.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_write(path, "w") as f:
            f.write("half of the new")
            raise RuntimeError("disk full")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_atomic_write_gives_an_ordinary_file_mode(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_write(tmp_path / "new.txt", "w") as f:
            f.write("new")
    finally:
        os.umask(umask)
    assert (tmp_path / "new.txt").stat().st_mode & 0o777 == 0o644


def test_atomic_write_to_a_directory_is_a_clear_error(tmp_path):
    with pytest.raises(UserError, match="is a directory"):
        with atomic_write(tmp_path, "w") as f:
            f.write("x")
