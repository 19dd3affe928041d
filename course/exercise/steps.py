"""What a learner writes in each step, what the skeleton gives them, and which checks grade it."""

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Step:
    """One step as an exercise.

    classes: for each class the learner writes, the methods to write (the others, such as an __init__
    that only names the layers, are given). functions: the module's functions to write. extras: the
    loop's pieces to write from other modules (step 00). imports: what the skeleton imports from the
    lesson, by module: earlier steps' classes and helpers at most, never this step's answer or a later
    step's. given_classes: classes the skeleton holds whole, so that the learner's
functions are the ones they call. patch: the modules (besides the task script) whose names the learner's classes replace
    while a check builds the step's model. omit: methods of the step's classes the skeleton leaves out
    (they draw pictures, or need a later step's classes). note: what the skeleton says beside the
    hints (a convention the checks rely on)."""
    task: str
    module: str
    classes: dict
    functions: tuple = ()
    extras: tuple = ()
    imports: dict = field(default_factory=dict)
    patch: tuple = ()
    omit: tuple = ("attention_weights", "new_cache")
    given_classes: tuple = ()
    ideas: dict = field(default_factory=dict)
    checks: tuple = ()
    note: str = ""

    def to_write(self) -> list[str]:
        """'Class.method' and function names, in the order the skeleton has them."""
        return ([f"{c}.{m}" for c, ms in self.classes.items() for m in ms] + list(self.functions)
                + [f for _, fs in self.extras for f in fs])

    def names(self) -> list[str]:
        """The names the learner's file must define."""
        return [*self.classes, *self.functions, *(f for _, fs in self.extras for f in fs)]


MODEL = ("layers", "shapes", "causal", "same as the lesson", "at other sizes", "loss at initialisation", "gradients")

# Points per check, for an autograder's results (check --json). The checks that prove the step's idea
# count most.
POINTS = {"layers": 1, "shapes": 1, "causal": 2, "same as the lesson": 3, "at other sizes": 2,
          "loss at initialisation": 1, "gradients": 1, "estimate_loss": 2, "generate's context": 2,
          "samples follow the probabilities": 2, "dropout where the lesson puts it": 2,
          "no dropout in eval": 1, "the cached path": 3, "a prompt, then one token at a time": 2,
          "a chunk after a prompt": 2, "a full cache refuses more": 1, "streaming past block_size": 2,
          "attention_to_window at other sizes": 2, "apply_rope turns each pair": 2,
          "Rotary from a start position": 2, "RotaryAttention turns q and k by position": 2,
          "training": 3}

STEPS = {
    "00": Step(
        "task00", "gpt.model", {"Bigram": ("forward",)},
        extras=(("gpt.train", ("estimate_loss",)), ("gpt.generate", ("generate",))),
        imports={"gpt.data": ("get_batch",)},
        ideas={"Bigram.forward": "each token's row of the table is its logits for the next token; the loss is "
                                 "the cross-entropy of those logits against the targets",
               "estimate_loss": "the mean loss over eval_iters batches of each split, with dropout off and no "
                                "gradients, and the model left in the mode it was in",
               "generate": "one token at a time: the model reads at most its last block_size tokens, and the "
                           "next token is drawn from the probabilities of the last position (temperature and "
                           "top_k are extras: the checks use their defaults)"},
        checks=("layers", "shapes", "same as the lesson", "loss at initialisation", "gradients", "estimate_loss",
                "generate's context", "samples follow the probabilities")),
    "01": Step(
        "task01", "gpt.model", {"AttentionHead": ("forward",)},
        ideas={"AttentionHead.forward": "scores are how well each query matches each key, scaled so that their "
                                        "spread doesn't grow with the head's size; no token may read a later one; "
                                        "each row of weights sums to 1 and mixes the values"},
        checks=MODEL),
    "02": Step(
        "task02", "gpt.model", {"MultiHeadAttention": ("queries_keys_values", "forward")},
        imports={"gpt.model": ("AttentionHead",), "gpt.errors": ("UserError",)},
        ideas={"MultiHeadAttention.queries_keys_values": "one Linear makes every head's queries, keys and values; "
                                                         "give each head its own slice of channels, heads before "
                                                         "positions",
               "MultiHeadAttention.forward": "each head attends on its own (task 01's arithmetic), then the heads' "
                                             "outputs sit side by side, position by position"},
        checks=MODEL),
    "03": Step(
        "task03", "gpt.model", {"FeedForward": ("__init__", "forward")},
        ideas={"FeedForward.__init__": "one Linear from n_embd to n_embd and a ReLU",
               "FeedForward.forward": "every token goes through the same layers on its own"},
        checks=MODEL),
    "04": Step(
        "task04", "gpt.model", {"Block": ("forward",)},
        ideas={"Block.forward": "communication, then computation: the tokens read each other first, then each "
                                "thinks about what it read"},
        checks=MODEL),
    "05": Step(
        "task05", "gpt.model", {"ProjectedAttention": ("forward",), "MLP": ("__init__", "forward"),
                                "ResidualBlock": ("forward",)},
        imports={"gpt.model": ("Block", "MultiHeadAttention")},
        ideas={"ProjectedAttention.forward": "task 02's attention, then one more Linear that mixes what the heads "
                                             "found",
               "MLP.__init__": "4 times wider inside: n_embd to 4 n_embd, a ReLU, and back to n_embd",
               "MLP.forward": "every token through the same layers, on its own",
               "ResidualBlock.forward": "each sub-layer adds what it computes to the stream it read, instead of "
                                        "replacing it"},
        checks=MODEL),
    "06": Step(
        "task06", "gpt.model", {"PreLNBlock": ("forward",)},
        imports={"gpt.model": ("ResidualBlock",)},
        ideas={"PreLNBlock.forward": "each sub-layer reads a normalised copy of the stream, and adds its output "
                                     "to the stream itself"},
        checks=MODEL),
    "07": Step(
        "task07", "gpt.model", {"CausalSelfAttention": ("forward",), "DropoutBlock": ("forward",),
                                "GPT": ("forward",)},
        imports={"gpt.model": ("MLP", "PreLNBlock", "ProjectedAttention", "causal_attention", "check_length",
                               "concat_heads", "init_weights", "language_model_loss")},
        ideas={"CausalSelfAttention.forward": "task 05's attention with dropout on its weights while training; "
                                              "given a cache, the new tokens' keys and values join it and their "
                                              "queries read all of it (cache.attend)",
               "DropoutBlock.forward": "task 06's block, with dropout on what each sub-layer adds to the stream",
               "GPT.forward": "token and position embeddings (positions start after the tokens a cache holds), the "
                              "blocks (each with its part of the cache), a last LayerNorm, the head, the loss; then "
                              "the cache moves on"},
        checks=(*MODEL, "dropout where the lesson puts it", "no dropout in eval", "the cached path")),
    "08": Step(
        "task08", "gpt.kv_cache", {"KVCache": ("store",)}, ("attention_to_window",),
        imports={"gpt.errors": ("UserError",)}, patch=("gpt.model", "gpt.kv_cache"), given_classes=("LayerCache",),
        ideas={"KVCache.store": "the new tokens' keys and values go after the ones the cache holds; attention "
                                "then needs every one stored so far, oldest first",
               "attention_to_window": "the queries are the window's last Tq positions: each reads the keys up to "
                                      "its own position in the window"},
        checks=("a prompt, then one token at a time", "a chunk after a prompt", "a full cache refuses more",
                "streaming past block_size", "attention_to_window at other sizes")),
    "09": Step(
        "task09", "gpt.modern", {"Rotary": ("forward",), "RotaryAttention": ("forward",)}, ("apply_rope",),
        imports={"gpt.model": ("CausalSelfAttention", "causal_attention", "concat_heads"),
                 "gpt.modern": ("rope_angles",), "gpt.errors": ("UserError",)},
        patch=("gpt.modern",),
        ideas={"Rotary.forward": "the angles of the positions x holds, which start at start",
               "RotaryAttention.forward": "queries and keys, not values, turned by their positions (which start "
                                          "where a cache's tokens end) before they meet",
               "apply_rope": "turn each channel pair by its angle: a rotation keeps the pair's length"},
        note="This repository pairs channel i with channel i + hs/2 (the half split of GPT-NeoX, as rope_angles'\n"
             "table expects); RoFormer's interleaved pairs (2i, 2i+1) pass the checks too.",
        checks=(*MODEL, "apply_rope turns each pair", "Rotary from a start position",
                "RotaryAttention turns q and k by position", "the cached path")),
}

TITLES = {"00": "the bigram, estimate_loss and generate", "01": "one head of self-attention",
          "02": "multi-head attention", "03": "a feed-forward layer after attention",
          "04": "blocks of communication and computation", "05": "residuals, a projection, a 4x MLP",
          "06": "layer normalisation before each sub-layer", "07": "the full GPT: dropout, a cache's path",
          "08": "the key/value cache", "09": "rotary positions"}

# The step that introduces each of the lesson's names: a skeleton may import what earlier steps did.
INTRODUCED = {
    "Bigram": "00", "language_model_loss": "00", "estimate_loss": "00", "generate": "00", "sample_next": "00",
    "AttentionHead": "01", "causal_mask": "01", "causal_attention_weights": "01",
    "MultiHeadAttention": "02", "causal_attention": "02", "concat_heads": "02",
    "FeedForward": "03", "Block": "04", "ProjectedAttention": "05", "MLP": "05", "ResidualBlock": "05",
    "PreLNBlock": "06", "CausalSelfAttention": "07", "DropoutBlock": "07", "GPT": "07", "init_weights": "07",
    "KVCache": "08", "LayerCache": "08", "attention_to_window": "08",
    "rope_angles": "09", "apply_rope": "09", "Rotary": "09", "RotaryAttention": "09", "RotaryGPT": "09",
    "RingKVCache": "09",
}
