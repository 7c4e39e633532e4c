"""Everything between a request and a model step: sequences, KV-block and state-slot bookkeeping, the scheduler,
the state-reuse index and snapshots, sampling, the engine loop and its async front.

May import: engine.runtime, engine.model, engine.text. The bookkeeping modules (sequence, block_manager, scheduler,
state_cache, request, outputs) import no torch.
"""
