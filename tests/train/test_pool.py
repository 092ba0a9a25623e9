"""--parallel: runs side by side in processes of their own, one setting per command."""

import operator

import pytest

from cifarlab.errors import UserError
from cifarlab.train import pool


@pytest.mark.slow  # spawns processes: 10-20 s on 2 busy cores
def test_jobs_run_in_processes_and_come_back_with_their_index():
    jobs = [(1,), (2,), (3,)]
    here = list(pool.run_all(operator.add, jobs, 1, shared=10))
    assert here == [(0, 11), (1, 12), (2, 13)]  # one after another, in order, in this process
    apart = sorted(pool.run_all(operator.add, jobs, 2, shared=10))  # the order they finish in
    assert apart == here


def test_the_command_line_setting_holds_for_every_part_and_is_checked():
    assert pool.default_parallel("cpu") == 1  # a CPU run already uses every core
    try:
        pool.set_parallel(3)
        assert pool.default_parallel("cpu") == 3
    finally:
        pool.set_parallel(None)
    assert pool.default_parallel("cpu") == 1
    with pytest.raises(UserError, match="--parallel must be at least 1, got 0"):
        pool.set_parallel(0)


@pytest.mark.slow  # spawns processes: 10-20 s on 2 busy cores
def test_a_failing_job_raises_in_the_caller():
    with pytest.raises(TypeError):
        list(pool.run_all(operator.add, [(1,), ("x",)], 2, shared=10))
