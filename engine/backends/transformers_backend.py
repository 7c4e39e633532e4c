"""The seed's `PtEngine` path: the checkpoint's own model code through transformers, experts int8 via quanto.

    backend = TransformersBackend("/models/MiniMax-M1-80k")       # QuantoConfig(weights="int8"), device_map="auto"
Like the official `main.py`, the LM head, embeddings, router gates and the `coefficient` modules stay unquantized.
Needs `optimum-quanto` (requirements-backends.txt) when quantizing.
"""
import json
import queue
import threading
from pathlib import Path

import torch

from ..serving.sampling import SamplingParams
from ..text.tokenizer import load_tokenizer
from .base import Backend, require

QUANTO_PIP = "optimum-quanto==0.2.7"


def keep_unquantized(num_layers: int) -> list[str]:
    """Modules the official int8 path leaves in bf16 (GH main.py)."""
    return ["lm_head", "embed_tokens"] + [f"model.layers.{i}.coefficient" for i in range(num_layers)] + \
        [f"model.layers.{i}.block_sparse_moe.gate" for i in range(num_layers)]


def model_kwargs(model_dir: str, dtype: str = "bfloat16", quantize_int8: bool = True,
                 device_map: str | dict = "auto") -> dict:
    """Keyword arguments for `AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)`."""
    kwargs = {"trust_remote_code": True, "dtype": getattr(torch, dtype), "device_map": device_map}
    if quantize_int8:
        require("optimum.quanto", QUANTO_PIP, "transformers (int8)")
        from transformers import QuantoConfig
        layers = json.loads((Path(model_dir) / "config.json").read_text())["num_hidden_layers"]
        kwargs["quantization_config"] = QuantoConfig(weights="int8", modules_to_not_convert=keep_unquantized(layers))
    return kwargs


def generate_kwargs(params: SamplingParams, eos_token_ids) -> dict:
    """`model.generate` arguments for our SamplingParams."""
    kw = {"max_new_tokens": params.max_tokens, "do_sample": not params.greedy}
    if not params.greedy:
        kw.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k or None)
    kw["eos_token_id"] = None if params.ignore_eos else sorted(eos_token_ids)
    return kw


class _TokenQueue:
    """A transformers streamer that forwards each new token id (the first `put` is the prompt)."""

    def __init__(self):
        self.q, self.prompt_seen = queue.Queue(), False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for t in value.flatten().tolist():
            self.q.put(t)

    def end(self) -> None:
        self.q.put(None)


class TransformersBackend(Backend):
    name = "transformers"

    def __init__(self, model_dir: str, dtype: str = "bfloat16", quantize_int8: bool = True, device_map="auto"):
        transformers = require("transformers", "transformers", "transformers")
        kwargs = model_kwargs(model_dir, dtype, quantize_int8, device_map)
        super().__init__(load_tokenizer(model_dir))
        self.model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, **kwargs).eval()

    def tokens(self, prompt_token_ids, params, request_id):
        from transformers import StoppingCriteria, StoppingCriteriaList
        streamer, stop = _TokenQueue(), threading.Event()

        class Aborted(StoppingCriteria):
            def __call__(self, input_ids, scores, **kw):
                return stop.is_set()

        device = next(self.model.parameters()).device
        ids = torch.tensor([prompt_token_ids], device=device)
        if params.seed is not None:
            torch.manual_seed(params.seed)
        kw = generate_kwargs(params, self.tokenizer.eos_token_ids)
        worker = threading.Thread(target=self._generate, args=(ids, streamer, StoppingCriteriaList([Aborted()]), kw),
                                  daemon=True)
        worker.start()
        try:
            while (token := streamer.q.get()) is not None:
                yield token
        finally:
            stop.set()
            worker.join()

    @torch.inference_mode()
    def _generate(self, ids, streamer, criteria, kw) -> None:
        try:
            self.model.generate(ids, streamer=streamer, stopping_criteria=criteria, **kw)
        finally:
            streamer.end()
