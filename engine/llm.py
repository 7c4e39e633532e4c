"""`LLM`: the offline, vLLM-like entry point — load a checkpoint directory, then logits / generate / chat."""
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cache import ModelCache
from .config import ModelConfig
from .model import MiniMaxM1
from .runner import ModelRunner, StepItem
from .sampling import SamplingParams, make_generator, sample
from .tokenizer import load_tokenizer
from .weights import load_weights

CPU_DEFAULT_CONTEXT = 65_536
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}


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


def resolve_dtype(dtype, device: torch.device, cfg: ModelConfig) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.float32 if device.type == "cpu" else DTYPES.get(cfg.torch_dtype, torch.bfloat16)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)} or a torch.dtype, got {dtype!r}")
    return DTYPES[dtype]


class LLM:
    """Load an M1-architecture checkpoint directory (official or -hf layout) and run it."""

    def __init__(self, model: str, *, device=None, dtype=None, tensor_parallel_size: int = 1, quantization=None,
                 max_model_len: int | None = None, progress=None):
        if tensor_parallel_size != 1:
            raise NotImplementedError("tensor_parallel_size > 1 is not implemented yet (see the scale issue)")
        if quantization is not None:
            raise NotImplementedError(f"quantization={quantization!r} is not implemented yet (see the scale issue)")
        if not Path(model).is_dir():
            raise FileNotFoundError(f"model path {model!r} is not a directory (expected a checkpoint with config.json)")
        self.model_dir = str(model)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.config = ModelConfig.from_dir(model)
        self.dtype = resolve_dtype(dtype, self.device, self.config)
        self.max_model_len = max_model_len or min(self.config.max_position_embeddings,
                                                  CPU_DEFAULT_CONTEXT if self.device.type == "cpu" else 1 << 20)
        self.tokenizer = load_tokenizer(model)
        t0 = time.perf_counter()
        self.model = MiniMaxM1(self.config, self.dtype, self.device)
        self.load_stats = load_weights(self.model, model, progress)
        self.load_stats["seconds"] = time.perf_counter() - t0
        bs = 256
        self.cache = ModelCache(self.config, num_slots=1, num_blocks=-(-self.max_model_len // bs), block_size=bs,
                                dtype=self.dtype, device=self.device)
        self.runner = ModelRunner(self.model, self.cache, self.device)

    @property
    def is_random_tiny(self) -> bool:
        """True for checkpoints written by engine.tiny (random weights), so front ends can say so."""
        return "random weights" in (Path(self.model_dir) / "generation_config.json").read_text(errors="ignore") \
            if (Path(self.model_dir) / "generation_config.json").exists() else False

    def _check_len(self, n: int) -> None:
        if n == 0:
            raise ValueError("the prompt is empty")
        if n >= self.max_model_len:
            raise ValueError(f"the prompt has {n} tokens; the context window is {self.max_model_len} tokens "
                             f"(over by {n - self.max_model_len + 1})")

    def logits(self, token_ids: list[int]) -> torch.Tensor:
        """One full prefill of `token_ids`: fp32 logits [len, vocab] of every position."""
        self._check_len(len(token_ids))
        self.cache.clear_slot(0)
        return self.runner.run([StepItem(list(token_ids), 0, 0, list(range(self.cache.num_blocks)))], all_logits=True)

    def generate(self, prompts=None, sampling_params=None, *, prompt_token_ids=None) -> list[RequestOutput]:
        """Generate for each prompt (text or token ids); one RequestOutput per prompt, in order."""
        if (prompts is None) == (prompt_token_ids is None):
            raise ValueError("give exactly one of prompts or prompt_token_ids")
        if prompts is not None:
            prompts = [prompts] if isinstance(prompts, str) else list(prompts)
            token_lists = [self.tokenizer.encode(p) for p in prompts]
        else:
            token_lists = [prompt_token_ids] if prompt_token_ids and isinstance(prompt_token_ids[0], int) \
                else list(prompt_token_ids)
            prompts = [None] * len(token_lists)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()] * len(token_lists)
        return [self._generate_one(list(t), p, text) for t, p, text in zip(token_lists, params, prompts)]

    def chat(self, messages, sampling_params=None, tools=None) -> list[RequestOutput]:
        """Apply M1's chat format to one conversation (or a list of them) and generate the assistant turn."""
        convs = [messages] if messages and isinstance(messages[0], dict) else list(messages)
        ids = [self.tokenizer.encode_chat(m, tools=tools) for m in convs]
        return self.generate(prompt_token_ids=ids, sampling_params=sampling_params)

    def _generate_one(self, prompt: list[int], params: SamplingParams, text: str | None) -> RequestOutput:
        self._check_len(len(prompt))
        self.cache.clear_slot(0)
        blocks = list(range(self.cache.num_blocks))
        gen = make_generator(params, self.device)
        eos = set() if params.ignore_eos else set(self.tokenizer.eos_token_ids)
        stops = eos | set(params.stop_token_ids)
        out: list[int] = []
        t0 = time.perf_counter()
        item = StepItem(prompt, 0, 0, blocks)
        reason = "length"
        while True:
            logits = self.runner.run([item])
            token = sample(logits, [params], [gen], vocab_limit=self.tokenizer.vocab_size)[0]
            out.append(token)
            if token in stops:
                reason = "stop"
                break
            text_so_far = self.tokenizer.decode(out)
            if any(s in text_so_far for s in params.stop):
                reason = "stop"
                break
            if len(out) >= params.max_tokens or len(prompt) + len(out) >= self.max_model_len:
                break
            item = StepItem([token], len(prompt) + len(out) - 1, 0, blocks)
        text_out = self.tokenizer.decode([t for t in out if t not in eos])
        for s in params.stop:
            if s in text_out:
                text_out = text_out[:text_out.index(s)]
        metrics = {"seconds": time.perf_counter() - t0, "completion_tokens": len(out)}
        return RequestOutput(prompt, [CompletionOutput(out, text_out, reason)], text, metrics)
