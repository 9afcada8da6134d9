"""What rank 0 prints while training: bar on a terminal, log lines otherwise."""
import io

from parallel_ms.io.progress import Progress


class Terminal(io.StringIO):
    def isatty(self):
        return True


def _rows(n):
    return [{"step": i, "loss": 1.0 / i, "residual": 0.5 / i, "lr": 1e-3, "wall_time": 0.1 * i}
            for i in range(1, n + 1)]


def test_log_lines_only_when_not_a_terminal():
    out = io.StringIO()
    p = Progress(10, 5, "auto", True, out)
    for row in _rows(10):
        p(row)
    p.close()
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["5", "10"] and "\r" not in out.getvalue()


def test_bar_on_a_terminal_and_nothing_on_other_ranks(monkeypatch):
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE", raising=False)
    monkeypatch.delenv("PMI_SIZE", raising=False)
    out = Terminal()
    p = Progress(10, 5, "auto", True, out)
    for row in _rows(10):
        p(row)
    p.close()
    text = out.getvalue()
    assert "\r[" in text and "10/10" in text and "step/s" in text and "ETA" in text
    assert text.count("step      5") == 1 and text.endswith("\n")
    other = Terminal()
    q = Progress(10, 5, "bar", False, other)
    for row in _rows(10):
        q(row)
    q.close()
    assert other.getvalue() == ""


def test_no_bar_under_mpirun_unless_asked(monkeypatch):
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert not Progress(10, 5, "auto", True, Terminal()).bar
    assert Progress(10, 5, "bar", True, Terminal()).bar
