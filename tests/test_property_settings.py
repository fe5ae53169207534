import time

from hypothesis import given, settings
from hypothesis import strategies as st


@settings(max_examples=2)
@given(st.integers())
def test_a_slow_example_of_a_property_test_does_not_fail_it(number):
    # a property test checks what the code does, not how long a busy 2-core machine takes to do it
    time.sleep(0.25)
    assert isinstance(number, int)
