"""M1's text conventions: the tokenizer, the chat format (official template, golden strings), the <think> splitter.

A leaf: imports nothing else of engine/ and no torch.
"""
