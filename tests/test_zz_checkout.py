"""Runs last (the file name sorts last): the suite wrote nothing into the checkout (tests use tmp_path)."""

from __future__ import annotations

import pytest
from conftest import CHECKOUT_BEFORE, REPO, checkout_state


def test_the_suite_left_the_checkout_as_it_found_it(request):
    before = request.config.stash.get(CHECKOUT_BEFORE, None)
    if before is None:
        pytest.skip(f"{REPO} is not a git checkout (or git is missing): nothing to compare")
    after = checkout_state()
    assert after is not None
    added, gone = sorted(after - before), sorted(before - after)
    assert not added and not gone, f"the tests changed the checkout {REPO}: new {added[:20]}, gone {gone[:20]}"
