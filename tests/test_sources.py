"""Model sources: local directories, ids with a hub prefix, offline / unknown ids and missing clients fail clearly.
No test touches the network: the Hugging Face client runs in its own offline mode against an empty cache."""
import sys

import pytest

from engine import LLM
from engine.model.sources import SourceError, load_progress, resolve_model, split_source


@pytest.fixture
def hf_offline(monkeypatch, tmp_path):
    from huggingface_hub import constants
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    return tmp_path / "hub"


def test_local_directory_resolves_to_itself(tiny_official):
    assert resolve_model(str(tiny_official)) == tiny_official
    assert resolve_model(tiny_official, source="local") == tiny_official


def test_missing_local_path_is_named():
    with pytest.raises(FileNotFoundError, match="no/such/dir"):
        resolve_model("no/such/dir")


@pytest.mark.parametrize("spec, source, want", [
    ("modelscope:MiniMax/MiniMax-M1-80k", "auto", ("modelscope", "MiniMax/MiniMax-M1-80k")),
    ("MiniMax/MiniMax-M1-80k", "modelscope", ("modelscope", "MiniMax/MiniMax-M1-80k")),
    ("hf:MiniMaxAI/MiniMax-M1-80k", "auto", ("hf", "MiniMaxAI/MiniMax-M1-80k")),
    ("MiniMaxAI/MiniMax-M1-80k", "auto", ("hf", "MiniMaxAI/MiniMax-M1-80k")),
    ("./models/m1", "auto", ("local", "./models/m1")),
])
def test_split_source(spec, source, want):
    assert split_source(spec, source) == want


def test_unknown_source_name_is_refused():
    with pytest.raises(ValueError, match="source must be one of"):
        split_source("a/b", "ftp")


def test_hf_id_offline_and_not_cached_fails_clearly(hf_offline):
    with pytest.raises(SourceError, match=r"cannot download 'nobody-here/no-such-m1'.*offline.*local directory"):
        resolve_model("nobody-here/no-such-m1", cache_dir=str(hf_offline))


def test_llm_with_an_offline_hub_id_fails_before_loading(hf_offline):
    with pytest.raises(SourceError, match="nobody-here/no-such-m1"):
        LLM("hf:nobody-here/no-such-m1", device="cpu")


def test_modelscope_missing_client_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "modelscope", None)  # as if not installed
    with pytest.raises(SourceError, match="pip install modelscope"):
        resolve_model("modelscope:MiniMax/MiniMax-M1-80k")


def test_load_progress_counts_to_the_end(capsys):
    progress = load_progress("test")
    for i in range(1, 6):
        progress(i, 5, f"t{i}")
    assert "5/5" in capsys.readouterr().err
