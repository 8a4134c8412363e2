"""Specification of textweaver.training.state: the run's progress, its schedule stretched where a resume changed
the budget."""

from __future__ import annotations

import pytest

from textweaver.training.state import RunState


def test_the_schedule_is_stretched_from_where_a_resume_changed_the_budget() -> None:
    s = RunState()
    assert s.schedule_progress(0.3) == 0.3  # no change of budget: the budget's progress itself
    s.anchor = (0.9, 0.45)  # 90% through the schedule when the budget doubled (45% of the new one)
    assert s.schedule_progress(0.45) == pytest.approx(0.9)
    assert s.schedule_progress(0.725) == pytest.approx(0.95)
    assert s.schedule_progress(1.0) == pytest.approx(1.0)
