"""Building blocks of the M1 network; each file holds one op or one layer kind.

May import: kernels/, torch, engine.model.tp_group, engine.model.context, engine.model.quant and each other.
"""
