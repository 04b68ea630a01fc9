"""uringtools.records.record: named tuples without collections."""

from __future__ import annotations

import pickle
from collections import namedtuple

import pytest

from uringtools.records import record

Point = record("Point", "x y z", defaults=(0,))
Reference = namedtuple("Reference", "x y z", defaults=(0,))


class Sub(record("Sub", "a b")):  # type: ignore[misc]
    __slots__ = ()

    @property
    def total(self) -> int:
        return self.a + self.b


@pytest.mark.parametrize("args,kwargs", [
    ((1, 2, 3), {}), ((1, 2), {}), ((), {"x": 1, "y": 2}),
    ((1,), {"z": 5, "y": 2}), ((), {"z": 1, "y": 2, "x": 3}),
])
def test_like_namedtuple(args: tuple, kwargs: dict) -> None:
    ours, ref = Point(*args, **kwargs), Reference(*args, **kwargs)
    assert ours == ref and tuple(ours) == tuple(ref)
    assert (ours.x, ours.y, ours.z) == (ref.x, ref.y, ref.z)
    assert repr(ours) == repr(ref).replace("Reference", "Point")
    assert hash(ours) == hash(ref)
    assert pickle.loads(pickle.dumps(ours)) == ours


@pytest.mark.parametrize("args,kwargs", [
    ((), {}), ((1,), {}), ((1, 2, 3, 4), {}), ((1, 2), {"q": 1}),
    ((1, 2), {"x": 1}),
])
def test_bad_arguments_raise_like_namedtuple(args: tuple, kwargs: dict) -> None:
    with pytest.raises(TypeError):
        Reference(*args, **kwargs)
    with pytest.raises(TypeError):
        Point(*args, **kwargs)


def test_fields_are_read_only_and_subclasses_keep_slots() -> None:
    p = Point(1, 2)
    with pytest.raises(AttributeError):
        p.x = 5  # type: ignore[misc]
    s = Sub(2, 3)
    assert s.total == 5 and s == (2, 3)
    assert not hasattr(s, "__dict__")
    assert Point._fields == ("x", "y", "z")
    with pytest.raises(TypeError):
        record("Bad", "a", defaults=(1, 2))
