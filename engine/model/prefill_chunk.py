"""The prefill chunk: how many prompt tokens one step runs through every layer. One number for all layer types.

Chosen from the H200 measurements (8 full-width layers, 7 lightning + 1 softmax, int8 experts, TP1; bench/results):

| what (bench/results file)                                   | 8k chunk  | 16k chunk | 32k chunk |
|-------------------------------------------------------------|-----------|-----------|-----------|
| 131,072-token prompt, whole model (scale_h200_tp1_L8-16_merged) | 3.595 s | 3.588 s   | 3.560 s   |
| same, before the merge (scale_h200_tp1_L8-16)               | 4.822 s   | 4.822 s   | 4.830 s   |
| int8 MoE grouped GEMM alone (scale_h200_tp1_L8_1M_merged)   | 350 TFLOP/s | 372     | -         |
| softmax attention, 16k queries at the end of 128k / 1M (same runs) | -  | 404 / 402 TFLOP/s | - |

Per layer type: a causal softmax layer does the same FLOPs however the prompt is cut (chunk c at offset p costs
c*p + c^2/2 pairs; summed over chunks, N^2/2), and a 16k chunk already gives its kernel 8,192 query tiles for 132 SMs;
a lightning layer is per token (its kernel cuts the chunk into its own 4k pieces); only the MoE gains from more
tokens per expert (+6% from 8k to 16k in the GEMM alone), and end to end that gain is within 1% (table). So one
chunk serves every layer: a separate chunk per layer type inside one forward would buy at most that 1%.

What decides it instead: a step's chunk is what a concurrent decode waits for (about 0.23 s per 8k on full M1 over
8 GPUs from the 1M run's 2.93 s per layer per 1M tokens), and one chunk's activations are the prefill's working set
(memory_plan.activation_bytes_per_token: 233 KB/token at TP1, 137 KB at TP8). Hence 8,192 tokens for the engine;
bench/scale.py still sweeps 8k/16k/32k and reports the fastest.
"""

PREFILL_CHUNK_TOKENS = 8192
