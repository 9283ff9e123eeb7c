"""Higgs Audio v2 text-to-speech (issue 7, in progress): the DualFFN generation model, prompts, the delay
pattern, sampling, generation and streaming. Submodules are imported explicitly; importing this package
loads nothing."""
