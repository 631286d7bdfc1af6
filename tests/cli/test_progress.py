"""The status line: rewritten in place on a terminal, one line per update elsewhere."""

from __future__ import annotations

import io

from sparse_tvm.cli.progress import StatusLine


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_status_is_rewritten_and_a_lasting_line_replaces_it(monkeypatch):
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    line = StatusLine()
    line.say("tuning 2 candidate kernels")
    line.status("[1/2] fc1 csr: 16/64 trials")
    line.status("[1/2] fc1 csr: 32/64 trials")
    line.say("    best 27.1 us")
    line.status("[2/2] fc2 csr: 16/64 trials")
    line.finish()
    assert screen.getvalue() == (
        "tuning 2 candidate kernels\n"
        "\r\033[K[1/2] fc1 csr: 16/64 trials"
        "\r\033[K[1/2] fc1 csr: 32/64 trials"
        "\r\033[K    best 27.1 us\n"
        "\r\033[K[2/2] fc2 csr: 16/64 trials"
        "\r\033[K"
    )


def test_elsewhere_every_status_is_a_line(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    line = StatusLine()
    line.status("[1/1] fc1 csr: 16/64 trials")
    line.status("[1/1] fc1 csr: 32/64 trials")
    line.finish()
    line.say("done")
    assert log.getvalue() == "[1/1] fc1 csr: 16/64 trials\n[1/1] fc1 csr: 32/64 trials\ndone\n"
