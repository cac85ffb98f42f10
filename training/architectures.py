"""The model a config names (`model.arch`): the Llama-style transformer, or the LSTM baseline of the scaling
sweeps. Here, not in model.py, so neither model file imports the other."""
from __future__ import annotations

import torch.nn as nn

from training.lstm import LSTMLanguageModel
from training.model import ModelConfig, Transformer


def build(cfg: ModelConfig) -> nn.Module:
    """The model `cfg.arch` names."""
    if cfg.arch == "lstm":
        return LSTMLanguageModel(cfg)
    return Transformer(cfg)
