"""The demo's progress: one line a terminal keeps rewriting, and nothing when not a terminal."""
import io

from ecs_worker.demo.progress import Progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_terminal_gets_one_updating_line_cleared_at_the_end():
    tty = Terminal()
    progress = Progress(tty)
    for n in (3, 2, 1, 0):
        progress.update(f"queue q: {n} waiting")
    progress.done()
    out = tty.getvalue()
    assert "\n" not in out  # never a new line: the same line rewritten
    assert out.count("\r") == 5 and out.endswith("\r\x1b[K")
    assert out.startswith("\rqueue q: 3 waiting\x1b[K")


def test_a_pipe_gets_nothing():
    pipe = io.StringIO()
    progress = Progress(pipe)
    progress.update("queue q: 3 waiting")
    progress.done()
    assert pipe.getvalue() == ""
