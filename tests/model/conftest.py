import pytest


@pytest.fixture(autouse=True)
def _model_tests_on_one_thread(one_thread):
    """Every model test runs on one thread (tests/conftest.py)."""
