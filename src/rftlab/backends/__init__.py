"""Sampling backends behind one interface: token ids in, token ids out (`rftlab.backends.base`).

`hf` (transformers, `rftlab.backends.hf`) and `vllm` (`rftlab.backends.vllm`, imported only when asked for).
"""
