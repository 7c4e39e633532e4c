"""Shared fixtures: tiny M1 checkpoints in both real layouts (written once per test session)."""
import pytest

from engine.model.tiny import write_checkpoint


@pytest.fixture(scope="session")
def tiny_official(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny_official"), layout="official", seed=0)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("tiny_hf"), layout="hf", seed=0)


@pytest.fixture(scope="session")
def tiny_llm(tiny_official):
    from engine import LLM
    return LLM(str(tiny_official), device="cpu", dtype="float32")
