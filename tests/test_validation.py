import math

import pytest

from calgrpo_lib.validation import check_choice, check_float, check_int, check_type


def test_messages_name_parameter_value_and_allowed():
    with pytest.raises(ValueError, match=r"steps=0 is out of range; allowed: an int in \[1, 6\]"):
        check_int("steps", 0, 1, 6)
    with pytest.raises(TypeError, match="flag=True is not an int"):
        check_int("flag", True, 0, None)
    with pytest.raises(ValueError, match=r"eps=0 is out of range; allowed: a number > 0"):
        check_float("eps", 0, 0, low_open=True)
    with pytest.raises(ValueError, match="lr=nan is not a finite number"):
        check_float("lr", math.nan)
    with pytest.raises(ValueError, match="mode='x' is not allowed; allowed: 'a', 'b'"):
        check_choice("mode", "x", ["a", "b"])
    with pytest.raises(TypeError, match="text=3 has type int; allowed: str"):
        check_type("text", 3, str)
    check_int("n", 5, None, None)
    check_float("p", 1.0, 0.0, 1.0)
