"""Connection strings: every accepted form, and a clear error for each malformed one."""

import pytest

from p_tasks.exceptions import ConnectionStringError
from p_tasks.target import Target, parse


@pytest.mark.parametrize(
    "text, expected",
    [
        ("buildbox", Target("buildbox")),
        ("me@buildbox", Target("buildbox", "me")),
        ("me@buildbox:2222", Target("buildbox", "me", 2222)),
        ("me@[::1]:2222", Target("::1", "me", 2222)),
        ("[fe80::1]", Target("fe80::1")),
        ("me@192.168.1.50", Target("192.168.1.50", "me")),
        ("gpu-box.example.com", Target("gpu-box.example.com")),
    ],
)
def test_accepted_forms(text, expected):
    assert parse(text) == expected
    assert parse(str(expected)) == expected


@pytest.mark.parametrize(
    "text, why",
    [
        ("user@", "host is empty"),
        (":22", "host is empty"),
        ("host:port:x", "IPv6 address needs brackets"),
        ("::1", "IPv6 address needs brackets"),
        ("me@::1:22", "IPv6 address needs brackets"),
        ("host:0", "port '0'"),
        ("host:99999", "port '99999'"),
        ("host:", "port ''"),
        ("@host", "user before '@' is empty"),
        ("-oProxyCommand=x", "must not start with '-'"),
        ("a b", "contains spaces"),
        ("", "empty"),
        ("me@[::1", "brackets"),
        ("me@[::1]x", "only ':port'"),
        ("ho;st", "not a valid host name"),
    ],
)
def test_malformed_forms_name_the_problem(text, why):
    with pytest.raises(ConnectionStringError) as err:
        parse(text)
    assert why in err.value.message
    assert "\n" not in err.value.message
