"""`LLM`: the offline, vLLM-like entry point — load a checkpoint directory, then logits / generate / chat."""
from dataclasses import dataclass, field

import torch

from .serving.llm_engine import EngineArgs, LLMEngine
from .runtime.runner import StepItem
from .serving.sampling import SamplingParams
from .serving.sequence import Sequence


@dataclass
class CompletionOutput:
    token_ids: list[int]
    text: str
    finish_reason: str | None = None


@dataclass
class RequestOutput:
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    prompt: str | None = None
    metrics: dict = field(default_factory=dict)


class LLM:
    """Load an M1-architecture checkpoint (official or -hf layout; a directory, or a ModelScope / Hugging Face id
    via engine/model/sources.py) and run it on our engine, optionally over `tensor_parallel_size` GPUs (CPU: gloo ranks)
    and with `quantization="experts_int8"`. `close()` stops the worker ranks."""

    def __init__(self, model: str, *, device=None, dtype=None, tensor_parallel_size: int = 1, quantization=None,
                 max_model_len: int | None = None, progress=None, source: str = "auto", **engine_args):
        from .model.sources import load_progress, resolve_model
        model = str(resolve_model(model, source=source))
        if progress is True:  # a tqdm bar over the checkpoint's tensors
            progress = load_progress()
        self.engine = LLMEngine(model, device=device, dtype=dtype, progress=progress,
                                tensor_parallel_size=tensor_parallel_size, quantization=quantization,
                                args=EngineArgs(max_model_len=max_model_len, **engine_args))
        self.tokenizer, self.config = self.engine.tokenizer, self.engine.config
        self.model, self.cache, self.runner = self.engine.model, self.engine.cache, self.engine.runner
        self.max_model_len, self.load_stats = self.engine.max_model_len, self.engine.load_stats

    def close(self) -> None:
        self.engine.close()

    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """One full prefill of `token_ids`: fp32 logits [len, vocab] of every position."""
        n = len(token_ids)
        if not 0 < n < self.max_model_len:
            raise ValueError(f"logits needs 1 to {self.max_model_len - 1} tokens, got {n}")
        seq = Sequence("logits", list(token_ids), SamplingParams())
        manager = self.engine.cache_manager
        if not manager.admit(seq, n):
            raise MemoryError(f"no free slot or KV room for {n} tokens")
        try:
            self.cache.clear_slot(seq.state_slot)
            return self.runner.run([StepItem(list(token_ids), 0, seq.state_slot, seq.block_table)], all_logits=True)
        finally:
            manager.release(seq)

    def generate(self, prompts=None, sampling_params=None, *, prompt_token_ids=None) -> list[RequestOutput]:
        """Generate for each prompt (text or token ids), batched; one RequestOutput per prompt, in order."""
        if (prompts is None) == (prompt_token_ids is None):
            raise ValueError("give exactly one of prompts or prompt_token_ids")
        if prompts is not None:
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            token_lists = [self.tokenizer.encode(p) for p in prompts]
        else:
            single = prompt_token_ids and isinstance(prompt_token_ids[0], int)
            token_lists = [list(prompt_token_ids)] if single else [list(t) for t in prompt_token_ids]
            prompts = [None] * len(token_lists)
        if isinstance(sampling_params, list):
            params = sampling_params
        else:
            params = [sampling_params or SamplingParams()] * len(token_lists)
        ids = [self.engine.add_request(t, p) for t, p in zip(token_lists, params)]
        results = {rid: RequestOutput(t, [CompletionOutput([], "")], text)
                   for rid, t, text in zip(ids, token_lists, prompts)}
        while any(r.outputs[0].finish_reason is None for r in results.values()):
            for u in self.engine.step():
                out = results[u.request_id].outputs[0]
                out.token_ids += u.token_ids
                out.text += u.text
                if u.finished:
                    if u.error:
                        raise RuntimeError(u.error)
                    out.finish_reason = u.finish_reason
                    results[u.request_id].metrics = u.stats or {}
        return [results[rid] for rid in ids]

    def chat(self, messages, sampling_params=None, tools=None) -> list[RequestOutput]:
        """Apply M1's chat format to one conversation (or a list of them) and generate the assistant turn."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        ids = [self.tokenizer.encode_chat(m, tools=tools) for m in convs]
        return self.generate(prompt_token_ids=ids, sampling_params=sampling_params)
