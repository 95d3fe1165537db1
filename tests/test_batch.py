"""The batch answer's total bound as plain Python (the endpoint itself: test_batch_e2e.py)."""

import pytest

from addons.batch import AnswerBudget
from addons.errors import AmbassadorError


def test_item_bodies_are_taken_from_the_budget_until_it_is_used_up():
    budget = AnswerBudget(total=10)
    budget.take(6, "a")
    budget.take(4, "b")  # exactly the total
    with pytest.raises(AmbassadorError) as refused:
        budget.take(1, "c")
    error = refused.value
    assert (error.status, error.reason, error.upstream) == (502, "too_large", "c")
    assert "10 bytes" in error.message and "body_size_limit" in error.message
    assert budget.left == 0

