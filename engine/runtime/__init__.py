"""Where tensors, devices and ranks live: the model cache, the runner that packs a step into tensors, one rank's
worker and rank 0's pool of worker processes.

May import: engine.model (and kernels, torch). Never serving or text: bookkeeping stays above.
"""
