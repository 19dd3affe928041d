"""Look inside your own model: a page in the browser that reads the text you type with the checkpoints
you give it, and shows, for each, how surprised it is by every character, what it would write next,
what every attention head reads, a stream from task 08's own code, its run, and its loss by position.

    python -m course.explore --checkpoint checkpoints/task07.pt            # then open the address it prints
    python -m course.explore --checkpoint checkpoints/task09.pt            # rotary positions
    python -m course.explore --checkpoint checkpoints/gpt.pt checkpoints/gru.pt checkpoints/lstm.pt
    python -m course.explore --checkpoint checkpoints/task07.pt --time     # how fast it answers, here

It listens on 127.0.0.1 only (this machine: no one else can reach it), fetches nothing from anywhere,
and runs until Ctrl-C. docs/explorer.md says what each part of the page shows.
"""

import errno
import logging
import os
import signal
import socket
import statistics
import sys
import threading
import time

import torch

from gpt.errors import UserError

from ..config import Parser, at_least, checked
from ..device import DEVICES, resolve_device
from ..exits import friendly_errors
from ..interrupts import Terminated, exit_status, stopped_by
from ..measures import stream_speed
from .app import make_app
from .reading import Opened, passage

PROG = "python -m course.explore"


def parse_args(argv=None):
    p = Parser(prog=PROG, description=__doc__)
    p.add_argument("--checkpoint", nargs="+", default=["checkpoints/task07.pt"],
                   help="one checkpoint, or several to compare side by side (default: %(default)s)")
    p.add_argument("--port", type=checked(int, lambda v: None if 0 <= v <= 65535 else "must be 0 to 65535"),
                   default=8000, help="the port on 127.0.0.1; 0 for any free one (default: %(default)s)")
    p.add_argument("--device", type=checked(str, choices=DEVICES), default="auto",
                   help="auto (cuda, then mps, then cpu), cuda, mps or cpu (default: auto)")
    p.add_argument("--open", action="store_true", help="open the page in this machine's browser too")
    p.add_argument("--time", action="store_true",
                   help="measure how fast the page reads a passage and streams (from an explorer it starts), print "
                        "it, and stop")
    p.add_argument("--repeat", type=checked(int, at_least(1)), default=20, help="with --time: reads timed (default: 20)")
    return p.parse_args(argv)


def open_checkpoints(paths: list[str], device: str) -> tuple[list, list[dict]]:
    """Each checkpoint opened (reading.Opened), and for each one that could not be, its path and why. With
    none opened there is no page to show: the messages end the program instead."""
    opened, failed = [], []
    for path in paths:
        try:
            opened.append(Opened(path, device))
        except UserError as e:
            failed.append({"path": path, "message": str(e)})
    if not opened:
        raise UserError("\n".join(f["message"] for f in failed))
    for f in failed:
        print(f"error: {f['message']}\n(the page shows the other checkpoints, and this message)", file=sys.stderr)
    return opened, failed


def listening_socket(port: int) -> socket.socket:
    """A socket listening on 127.0.0.1:port, or a UserError that says what to do. Requests that come
    before the server has started wait for it, so the address can be printed at once."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if os.name == "posix":  # a port just freed by an explorer that stopped can be bound again at once
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
    except OSError as e:
        sock.close()
        if e.errno == errno.EADDRINUSE:
            raise UserError(f"port {port} is in use on 127.0.0.1 (another explorer, or another program): choose another "
                            f"with --port N, or --port 0 for any free one") from None
        raise UserError(f"can't listen on 127.0.0.1:{port} ({e.strerror}): choose another port with --port N, or "
                        f"--port 0 for any free one") from None
    sock.listen(2048)  # uvicorn's backlog
    return sock


STOP_SECONDS = 5  # after Ctrl-C or SIGTERM, the longest the explorer waits for its graceful stop


def server_for(app):
    """uvicorn's server for the app: quiet but for errors, and an open stream doesn't hold Ctrl-C up for
    more than 2 seconds. Whatever holds the graceful stop up, the explorer ends STOP_SECONDS after the
    first Ctrl-C or SIGTERM: it writes nothing, so nothing is left half done."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame):  # stopping: the requests it cancels are not errors to report
            logging.getLogger("uvicorn.error").setLevel(logging.CRITICAL)
            if not self.should_exit:
                watchdog = threading.Timer(STOP_SECONDS, stop_now, args=(sig,))
                watchdog.daemon = True  # a stop that ends in time isn't held up by it
                watchdog.start()
            super().handle_exit(sig, frame)

    return Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_graceful_shutdown=2))


def ending(stop: KeyboardInterrupt) -> tuple[int, str]:
    """The exit status and the last line of a stop: 0 after Ctrl-C (the way to stop the explorer), 143
    after SIGTERM."""
    status = exit_status(stop) if isinstance(stop, Terminated) else 0
    return status, stopped_by(stop) if status else "explorer stopped"


def stop_now(sig: int) -> None:
    """End the process at once, as serve() ends it."""
    status, line = ending(Terminated() if sig == signal.SIGTERM else KeyboardInterrupt())
    print(line, file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def serve(app, sock: socket.socket) -> int:
    """Answer the page's requests until Ctrl-C or SIGTERM, which end it cleanly: uvicorn closes the
    connections, then raises the signal again, here. Returns the exit status (see ending). A measurement still running in a worker thread is not
    waited for: the explorer writes nothing, so nothing it does needs finishing."""
    try:
        server_for(app).run(sockets=[sock])
        stop = KeyboardInterrupt()  # where the shell ignores Ctrl-C's signal (a background job), uvicorn just returns
    except KeyboardInterrupt as e:
        stop = e
    status, line = ending(stop)
    print(line, file=sys.stderr, flush=True)
    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.current_thread()):
        sys.stdout.flush()
        os._exit(status)
    return status


def main(argv=None) -> int:
    args = parse_args(argv)
    with friendly_errors():  # a missing or foreign checkpoint, a port in use: a message, not a traceback
        if args.time:
            return time_the_page(args, open_checkpoints(args.checkpoint, resolve_device(args.device))[0])
        # One PyTorch thread per request: the page's forward passes are small, and one thread runs them as
        # fast as two. With two each, the OpenMP threads of the requests' threads outnumber a 2-core CPU's
        # cores and wait for each other: streaming fell well behind task 08's (RESEARCH_LOG.md, 2026-12-03).
        torch.set_num_threads(1)
        opened, failed = open_checkpoints(args.checkpoint, resolve_device(args.device))
        app = make_app(opened, failed, passage(opened[0]))
        sock = listening_socket(args.port)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/"
        for o in opened:
            print(f"{o.path}: {o.label}, block_size {o.model.block_size}")
        print(f"explorer: {url}  (this machine only; Ctrl-C to stop)", flush=True)
        if args.open:
            import webbrowser

            webbrowser.open(url)
        return serve(app, sock)


def time_the_page(args, opened: list, stream_chars: int = 2000, rounds: int = 3) -> int:
    """How fast the page answers, through HTTP as the browser asks, from an explorer started for it in
    another process, as it runs for a learner: reading a passage of PASSAGE characters of the
    validation split (every model's losses, next tokens and attention maps), and streaming
    stream_chars characters from each model. Beside each stream, task 08's stream of the same model in
    this process (course/measures.py's stream_speed: the same characters, from the same seed), in
    alternating rounds. The browser's drawing is not included: the page's status line shows it."""
    import json
    import subprocess
    import urllib.request

    command = [sys.executable, "-m", "course.explore", "--checkpoint", *[o.path for o in opened], "--port", "0",
               "--device", args.device]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = next((line.split()[1] for line in server.stdout if line.startswith("explorer: ")), None)
        if url is None:
            raise UserError(f"the explorer did not start ({' '.join(command)}):\n{server.stderr.read()}")

        def post(path: str, body: dict) -> bytes:
            request = urllib.request.Request(url + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
            with urllib.request.urlopen(request) as answer:
                return answer.read()

        text = passage(opened[0], whole_lines=False)
        print(f"read {len(text)} characters of the validation split ({', '.join(o.path for o in opened)}), "
              f"{args.repeat} times after 3 to warm up:")
        for _ in range(3):
            post("api/read", {"text": text})
        walls, parts = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            answer = json.loads(post("api/read", {"text": text}))
            walls.append(1000 * (time.perf_counter() - start))
            parts.append([m["ms"] for m in answer["models"]])
        print(f"  from sending to the whole answer: median {statistics.median(walls):.0f} ms (fastest "
              f"{min(walls):.0f}, slowest {max(walls):.0f}); the models' part: " +
              ", ".join(f"{o.label} {statistics.median(p):.0f} ms" for o, p in zip(opened, zip(*parts))))
        for i, o in enumerate(opened):
            page, task08 = [], []
            for _ in range(rounds):
                start = time.perf_counter()
                chars = len(post("api/stream", {"model": i, "text": "\n", "tokens": stream_chars}).decode())
                page.append(chars / (time.perf_counter() - start))
                task08.append(stream_speed(o.model, stream_chars)["all"])
            print(f"stream {stream_chars:,} tokens from {o.label}, {rounds} alternating rounds, characters/s: the "
                  f"page {', '.join(f'{s:,.0f}' for s in page)} (median {statistics.median(page):,.0f}); task 08's "
                  f"stream {', '.join(f'{s:,.0f}' for s in task08)} (median {statistics.median(task08):,.0f})")
    finally:
        server.send_signal(signal.SIGINT)  # as Ctrl-C stops it
        server.communicate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
