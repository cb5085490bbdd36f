"""lrlc_experiments: the paper's experiments (Section 4) with PyTorch, runnable on a laptop CPU.

`python -m lrlc_experiments run` trains the selected model variants over seeds and ranks,
chooses each LRLC variant's rank on the validation split, and writes a run directory with
the results table (markdown and JSON), the figures and the config and seed of every model.
"""
