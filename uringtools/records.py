"""Named tuples without :mod:`collections`.

``collections.namedtuple`` costs about 6 ms of start-up (collections pulls
in operator, keyword, reprlib, heapq); :func:`record` makes the same kind of
class (fields by name and by index, defaults, keywords, a readable repr)
from built-ins only.
"""

import sys
from _operator import itemgetter


def record(typename: str, field_names: str, defaults: tuple = ()) -> type:
    """A tuple subclass with the whitespace-separated ``field_names``; the
    last ``len(defaults)`` fields default to ``defaults``."""
    fields = tuple(field_names.split())
    count = len(fields)
    if len(defaults) > count:
        raise TypeError("more defaults than fields")
    index = {name: i for i, name in enumerate(fields)}
    first_default = count - len(defaults)

    def __new__(cls, *args, **kwargs):  # type: ignore[no-untyped-def]
        if not kwargs and len(args) == count:
            return tuple.__new__(cls, args)
        if len(args) > count:
            raise TypeError(f"{typename}() takes {count} arguments, "
                            f"{len(args)} given")
        values = list(args) + [_MISSING] * (count - len(args))
        for key, value in kwargs.items():
            i = index.get(key)
            if i is None:
                raise TypeError(f"{typename}() got an unexpected keyword "
                                f"argument {key!r}")
            if values[i] is not _MISSING:
                raise TypeError(f"{typename}() got multiple values for "
                                f"argument {key!r}")
            values[i] = value
        for i in range(count):
            if values[i] is _MISSING:
                if i < first_default:
                    raise TypeError(f"{typename}() missing argument "
                                    f"{fields[i]!r}")
                values[i] = defaults[i - first_default]
        return tuple.__new__(cls, values)

    def __repr__(self) -> str:  # type: ignore[no-untyped-def]
        inner = ", ".join(f"{name}={value!r}"
                          for name, value in zip(fields, self))
        return f"{type(self).__name__}({inner})"

    def __getnewargs__(self) -> tuple:  # type: ignore[no-untyped-def]
        return tuple(self)

    namespace = {"__slots__": (), "__new__": __new__, "__repr__": __repr__,
                 "__getnewargs__": __getnewargs__, "_fields": fields,
                 # pickle finds the class where record() was called
                 "__module__": sys._getframe(1).f_globals.get("__name__",
                                                              "__main__")}
    for i, name in enumerate(fields):
        namespace[name] = property(itemgetter(i), doc=f"field {i}: {name}")
    return type(typename, (tuple,), namespace)


class _Missing:
    __slots__ = ()


_MISSING = _Missing()
