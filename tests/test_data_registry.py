"""Tests for speechbrain_dsn.data.registry (corpora as registry entries)."""

import pytest

from speechbrain_dsn.data import registry


def test_every_corpus_is_an_entry_with_its_properties():
    assert set(registry.CORPORA) == {"wsj0-2mix", "wham", "libri2mix", "wsj0-3mix", "libri3mix", "folder"}
    wsj3 = registry.get_corpus("wsj0-3mix")
    assert (wsj3.num_spks, wsj3.strict_rate, wsj3.drawn_gains, wsj3.noise) == (3, True, False, "none")
    wham = registry.get_corpus("wham")
    assert (wham.num_spks, wham.noise) == (2, "required")
    folder = registry.get_corpus("folder")
    assert folder.num_spks is None and not folder.strict_rate and folder.drawn_gains and folder.official is None


def test_unknown_corpus_names_the_choices():
    with pytest.raises(ValueError, match=r"corpus must be one of .*wsj0-3mix.*got 'timit'"):
        registry.get_corpus("timit")


def test_num_spks_resolution():
    assert registry.get_corpus("libri3mix").resolve_num_spks(None) == 3
    assert registry.get_corpus("folder").resolve_num_spks(None) == 2
    assert registry.get_corpus("folder").resolve_num_spks(1) == 1
    with pytest.raises(ValueError, match=r"libri2mix.*2 sources.*num_spks is 3.*libri3mix"):
        registry.get_corpus("libri2mix").resolve_num_spks(3)


def test_a_new_entry_is_found_by_name():
    entry = registry.Corpus(
        name="my-corpus", num_spks=2, find=lambda *a, **k: {}, strict_rate=True, drawn_gains=False, noise="none"
    )
    registry.register(entry)
    try:
        assert registry.get_corpus("my-corpus") is entry and "my-corpus" in registry.CORPORA
        with pytest.raises(ValueError, match="already registered"):
            registry.register(entry)
    finally:
        registry.unregister("my-corpus")
    assert "my-corpus" not in registry.CORPORA
