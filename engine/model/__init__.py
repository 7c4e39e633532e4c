"""The M1 network and everything that builds it: config, weights loader, layers, int8 experts, tiny checkpoints.

May import: kernels/, torch, engine.text (the leaf: tiny checkpoints write tokenizer files) and engine.model.*; never
runtime or serving. The network receives its tensor-parallel rank group (`tp_group.TPGroup`) as an argument and
reads per-step metadata from `context` (built by the runtime's runner).
"""
