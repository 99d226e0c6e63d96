"""The progress lines of long stages: done/total, rate and ETA, throttled, and a last line."""

from raycat.progress import Progress


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _progress(total: int, **kwargs):
    clock, lines = FakeClock(), []
    return Progress(total, "objects", clock=clock, write=lines.append, **kwargs), clock, lines


def test_lines_give_done_rate_and_eta_at_most_every_few_seconds():
    progress, clock, lines = _progress(1000, stage="cutouts", every=5.0)
    clock.now += 2.0
    progress.update(100)  # 2 s in: too soon for a line
    assert lines == []
    clock.now += 3.0
    progress.update(150)  # 250 in 5 s: 50/s, 750 left -> 15 s
    assert lines == ["cutouts: 250/1000 objects (25%), 50/s, ETA 15 s"]
    clock.now += 1.0
    progress.update(10)
    assert len(lines) == 1


def test_the_end_is_always_printed_once_with_the_total_time():
    progress, clock, lines = _progress(300)
    clock.now += 120.0
    progress.update(300)
    progress.update(0)
    assert lines == ["300/300 objects in 2 min 00 s, 2.5/s"]


def test_advance_returns_the_status_for_the_callers_own_line():
    progress, clock, lines = _progress(10)
    clock.now += 4000.0
    assert progress.advance() == "1/10 objects (10%), 0.00025/s, ETA 10 h 00 min"
    assert lines == []
