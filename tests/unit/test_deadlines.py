from __future__ import annotations

import contextvars
import threading
import time

import pytest

from resilient_etcd import ConfigurationError, DeadlineExceeded, deadline, remaining
from resilient_etcd.deadlines import call_timeout, current_deadline


def test_no_scope() -> None:
    assert remaining() is None and current_deadline() is None
    assert call_timeout(None, 10) == 10
    assert call_timeout(3, 10) == 3
    assert call_timeout(None, None) is None


def test_inner_scope_can_only_shorten() -> None:
    with deadline(1):
        outer = current_deadline()
        with deadline(100):
            assert current_deadline() == outer
        with deadline(0.5):
            assert current_deadline() is not None and outer is not None and current_deadline() < outer
        assert current_deadline() == outer
    assert current_deadline() is None


def test_call_timeout_takes_the_minimum() -> None:
    with deadline(0.5):
        t = call_timeout(10, 20)
        assert t is not None and 0.4 < t <= 0.5
        assert call_timeout(0.1, 20) == 0.1


def test_expired_scope_raises_before_io() -> None:
    with deadline(0.01):
        time.sleep(0.02)
        with pytest.raises(DeadlineExceeded, match="before the call started"):
            call_timeout(None, 10)


def test_decorator_and_reentrancy() -> None:
    scope = deadline(5)

    @scope
    def f(depth: int) -> float:
        left = remaining()
        assert left is not None
        return f(depth - 1) if depth else left

    assert 0 < f(3) <= 5
    assert remaining() is None


@pytest.mark.parametrize("bad", [0, -1, float("inf"), float("nan"), "1", True])
def test_bad_seconds(bad: object) -> None:
    with pytest.raises(ConfigurationError):
        deadline(bad)  # type: ignore[arg-type]


def test_threads_carry_the_scope_with_copy_context() -> None:
    seen: list[float | None] = []
    with deadline(5):
        plain = threading.Thread(target=lambda: seen.append(remaining()))
        plain.start()
        plain.join()
        ctx = contextvars.copy_context()
        carried = threading.Thread(target=ctx.run, args=(lambda: seen.append(remaining()),))
        carried.start()
        carried.join()
    assert seen[0] is None
    assert seen[1] is not None and 0 < seen[1] <= 5


def test_a_bad_per_call_timeout_is_refused_before_the_call() -> None:
    import pytest

    from resilient_etcd import ConfigurationError
    from resilient_etcd.deadlines import call_timeout

    for bad in (-1, 0, float("nan"), "3"):
        with pytest.raises(ConfigurationError, match="timeout"):
            call_timeout(bad, 10.0)  # type: ignore[arg-type]
    assert call_timeout(2.0, 10.0) == 2.0
