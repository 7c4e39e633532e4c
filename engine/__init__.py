"""M1 Studio's inference engine for MiniMax-M1: `from engine import LLM, SamplingParams`."""
from .llm import LLM, CompletionOutput, RequestOutput
from .serving.sampling import SamplingParams

__all__ = ["LLM", "SamplingParams", "RequestOutput", "CompletionOutput"]
