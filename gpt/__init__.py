"""A character-level GPT, built one idea at a time: the parts that tasks 01-09 compose."""

from .config import Config, parse_config
from .data import get_batch, load_dataset, load_text
from .errors import UserError
from .generate import generate
from .model import MLP, AttentionHead, Block, FeedForward, LanguageModel, MultiHeadAttention, count_parameters
from .run import run_task
from .tokenizer import CharTokenizer
from .train import estimate_loss, make_optimizer, train

__all__ = [
    "Config", "parse_config", "get_batch", "load_dataset", "load_text", "UserError", "generate",
    "MLP", "AttentionHead", "Block", "FeedForward", "LanguageModel", "MultiHeadAttention",
    "count_parameters", "run_task", "CharTokenizer", "estimate_loss", "make_optimizer", "train",
]
