"""The lesson: a character-level GPT, built one idea at a time. What a learner reads to understand the
loss table, each part once:

    tokenizer.py   characters, and byte-level BPE              data.py       the text, split, batches
    model.py       the course's ideas, one class each (tasks 00-07)
    kv_cache.py    task 08's key/value cache                   generate.py   sampling and streaming
    modern.py      task 09's rotary positions, and other changes from recent papers
    rnn.py         the baseline before attention: a GRU or LSTM language model
    train.py       the lecture's loop and its loss estimate    schedules.py  learning rate over a run
    measures.py    loss, perplexity, bits per character, accuracy, loss by position
    errors.py      the one exception the lesson raises: a mistake the user can fix

The rule: gpt never imports `course` (the machinery that starts, saves, stops, prints, draws,
parallelises, reports and grades runs), and importing a gpt module only defines names.
"""
