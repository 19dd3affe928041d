"""Look inside your own model: a page in the browser for the checkpoints this course writes (task 07's
and task 09's GPTs, compare_rnn.py's GPT, GRU and LSTM, BPE models), on text you type.

    python -m course.explore --checkpoint checkpoints/task07.pt
    python -m course.explore --checkpoint checkpoints/gpt.pt checkpoints/gru.pt      # side by side

    __main__.py   the command: opens the checkpoints, serves the page on 127.0.0.1, stops on Ctrl-C
    reading.py    every number the page shows, from each model's own forward in PyTorch
    app.py        the web part: the page and its four requests (Starlette, served by uvicorn)
    page.html     the page: draws what reading.py computed, and computes nothing of its own

docs/explorer.md says what the page shows and how fast it answers.
"""
