"""A character-level GPT, built one idea at a time: the parts that tasks 00-09 compose.

    model.py       the course's ideas, one class each (task 00 to task 07)
    kv_cache.py    task 08's key/value cache       modern.py   task 09's rotary positions and other changes
    config.py      the settings of a run           data.py     Tiny Shakespeare, split, batches
    tokenizer.py   characters, and byte-level BPE  train.py    the one training loop, loss estimate, optimizer
    run.py         what every task does around its model: train, report, draw, sample
    generate.py    sampling and streaming          measures.py loss, perplexity, bits per character, accuracy
    checkpoint.py  saving and loading models       presets.py  task 07's and 09's runs, and the search
    search.py      grids and the search            plots.py    loss curves and attention maps
    report.py      the whole course in one picture and one table (python -m gpt.report)
    device.py      cuda, mps or cpu, and the precision each runs natively
    rnn.py         the baseline before attention: a GRU or LSTM language model (compare_rnn.py)
"""
from .cpu_kernels import choose_avx2

choose_avx2()  # the same table on every x86 CPU; before anything imports torch (gpt/cpu_kernels.py)


# Ctrl-C before a script's work begins, while torch is still loading, ends with one line and exit
# status 130 instead of a traceback from inside torch (gpt/interrupts.py).
from .interrupts import quiet_interrupts  # noqa: E402

quiet_interrupts()
