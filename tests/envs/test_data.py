"""envs.data and envs.models: the stdlib byte corpus (split by file, deterministic, cached), the digits split,
and the model presets."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from envs.data import load_corpus, load_digits_data, split_of, stdlib_files
from envs.models import GPTConfig, build_model, model_names

SMALL = 120_000


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory):
    return load_corpus(SMALL, cache=tmp_path_factory.mktemp("cache"))


def test_split_is_by_file_and_disjoint(corpus) -> None:
    assert corpus.train_files and corpus.val_files
    assert not set(corpus.train_files) & set(corpus.val_files)
    assert all(split_of(f, 0.1) == "train" for f in corpus.train_files)
    assert all(split_of(f, 0.1) == "val" for f in corpus.val_files)
    assert corpus.train_files == sorted(corpus.train_files)
    assert not any("/test/" in f or f.startswith("test/") for f in corpus.train_files + corpus.val_files)


def test_whole_stdlib_split_share() -> None:
    files = [rel for rel, _ in stdlib_files()]
    assert len(files) > 300
    val = sum(split_of(f, 0.1) == "val" for f in files)
    assert 0.05 < val / len(files) < 0.15
    assert split_of("os.py", 0.1) == split_of("os.py", 0.1)


def test_size_knob_and_dtype(corpus) -> None:
    assert corpus.train.dtype == np.uint8 and corpus.val.dtype == np.uint8
    total = corpus.train.size + corpus.val.size
    assert 0.9 * SMALL <= total <= SMALL + 3 * (len(corpus.train_files) + len(corpus.val_files))
    assert corpus.val.size < corpus.train.size


def test_deterministic_and_cached(corpus, tmp_path) -> None:
    fresh = load_corpus(SMALL, cache=tmp_path)  # built again from the files
    assert fresh.key == corpus.key
    assert np.array_equal(fresh.train, corpus.train) and np.array_equal(fresh.val, corpus.val)
    assert list(tmp_path.glob("stdlib-*.json"))
    again = load_corpus(SMALL, cache=tmp_path)  # from the cache
    assert np.array_equal(again.train, corpus.train) and again.val_files == corpus.val_files
    other = load_corpus(2 * SMALL, cache=tmp_path)
    assert other.key != corpus.key


def test_cache_dir_env(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("MANGO_CACHE_DIR", str(tmp_path / "c"))
    load_corpus(SMALL)
    assert list((tmp_path / "c").glob("stdlib-*-train.npy"))


def test_batches_in_range_and_shifted(corpus) -> None:
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        x, y = corpus.get_batch(split, 8, 48, g)
        assert x.shape == y.shape == (8, 48) and x.dtype == y.dtype == torch.int64
        assert int(x.min()) >= 0 and int(x.max()) < 256
        assert torch.equal(x[:, 1:], y[:, :-1])
    a = corpus.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    b = corpus.get_batch("train", 4, 16, torch.Generator().manual_seed(3))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_bad_arguments(corpus) -> None:
    with pytest.raises(ValueError, match="split"):
        corpus.get_batch("test", 2, 8)
    with pytest.raises(ValueError, match="seq_len"):
        corpus.get_batch("val", 2, 10_000_000)
    with pytest.raises(ValueError, match="val_fraction"):
        load_corpus(SMALL, val_fraction=1.5)
    with pytest.raises(ValueError, match="max_bytes"):
        load_corpus(10)


def test_digits_split() -> None:
    d = load_digits_data()
    assert d.x_train.shape[1] == 64 and d.x_train.dtype == torch.float32
    assert d.x_train.shape[0] + d.x_val.shape[0] == 1797
    assert abs(d.x_val.shape[0] - 0.2 * 1797) <= 1
    assert float(d.x_train.min()) >= 0.0 and float(d.x_train.max()) <= 1.0
    assert set(d.y_train.tolist()) == set(range(10))
    d2 = load_digits_data()
    assert torch.equal(d.x_val, d2.x_val) and torch.equal(d.y_val, d2.y_val)
    x, y = d.get_batch("train", 32, torch.Generator().manual_seed(0))
    assert x.shape == (32, 64) and y.shape == (32,) and y.dtype == torch.int64


# ------------------------------------------------------------------------------------------- models
@pytest.mark.parametrize("name", ["lm-tiny", "lm-small"])
def test_lm_presets(name: str) -> None:
    m = build_model(name, seed=1)
    cfg: GPTConfig = m.cfg  # type: ignore[assignment]
    x = torch.randint(0, 256, (2, cfg.block_size))
    logits = m(x)
    assert logits.shape == (2, cfg.block_size, 256)
    with torch.no_grad():
        loss = m.loss(x, torch.randint(0, 256, x.shape))  # type: ignore[operator]
    assert abs(float(loss) - np.log(256)) < 0.5  # near chance at initialization
    big = [p for p in m.parameters() if p.ndim >= 2]
    assert all(p.numel() >= 4096 for p in big)


def test_build_model_is_seeded_and_leaves_global_rng() -> None:
    state = torch.random.get_rng_state()
    a, b, c = build_model("lm-tiny", 7), build_model("lm-tiny", 7), build_model("lm-tiny", 8)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert not all(torch.equal(p, q) for p, q in zip(a.parameters(), c.parameters()))
    assert a.wte.weight is a.lm_head.weight  # tied  # type: ignore[union-attr]


def test_digits_mlp_and_errors() -> None:
    m = build_model("digits-mlp", 0)
    assert m(torch.zeros(5, 64)).shape == (5, 10)
    assert "digits-mlp" in model_names()
    with pytest.raises(ValueError, match="unknown model"):
        build_model("gpt-5", 0)
    with pytest.raises(ValueError, match="block_size"):
        build_model("lm-tiny", 0)(torch.zeros(1, 65, dtype=torch.long))
    with pytest.raises(ValueError, match="n_head"):
        GPTConfig(n_embd=30, n_head=4)


def test_byte_gru_is_a_seeded_lm_the_core_compresses() -> None:
    """The recurrent family: byte logits near chance at initialization, seeded weights, every weight matrix
    large enough for MangoAdamW's default ``min_compress_numel``, the window bound enforced."""
    a, b = build_model("gru-tiny", 3), build_model("gru-tiny", 3)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    x = torch.randint(0, 256, (2, 64))
    assert a(x).shape == (2, 64, 256)
    with torch.no_grad():
        assert abs(float(a.loss(x, x)) - np.log(256)) < 0.5  # type: ignore[operator]
    assert all(p.numel() >= 4096 for p in a.parameters() if p.ndim >= 2)
    assert "gru-tiny" in model_names()
    with pytest.raises(ValueError, match="block_size"):
        a(torch.zeros(1, 65, dtype=torch.long))


def test_mean_loss_is_the_batches_mean_and_keeps_the_mode(corpus) -> None:
    model = build_model("lm-tiny", 0)
    gen = torch.Generator().manual_seed(0)
    batches = [corpus.get_batch("val", 2, 16, gen) for _ in range(3)]
    with torch.no_grad():
        by_hand = sum(float(model.loss(x, y)) for x, y in batches) / 3  # dropout 0: train mode computes alike
    assert model.training and model.mean_loss(batches) == pytest.approx(by_hand, rel=1e-6)
    assert model.training  # restored
    model.eval()
    model.mean_loss(batches)
    assert not model.training
