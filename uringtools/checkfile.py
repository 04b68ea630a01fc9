"""Checksum lines as GNU coreutils 9.1 writes and reads them.

Writing: ``HEX  NAME`` (``HEX *NAME`` in binary mode) or the BSD tag form
``TAG (NAME) = HEX``; a name holding a backslash, newline or carriage return
makes the line start with ``\\`` and is escaped (``\\\\``, ``\\n``, ``\\r``),
unless lines end in NUL (``-z``).

Reading (``-c``): GNU lines, BSD tag lines for the chosen algorithm, the
reversed BSD form ``HEX NAME``, comments (``#`` first), CRLF, upper-case hex.
Everything works on bytes: names are whatever the file system holds.

Also here: GNU's ``quotef`` (shell-escape quoting of names in messages).
"""

from __future__ import annotations

from .records import record
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Optional, Tuple

_WHITE = b" \t"
_HEX_DIGITS = b"0123456789abcdefABCDEF"
_HEX = frozenset(_HEX_DIGITS)


# -- output -----------------------------------------------------------------

def needs_escape(name: bytes) -> bool:
    """Does GNU 9.1 escape this name in its output lines?"""
    return b"\\" in name or b"\n" in name or b"\r" in name


def escape_name(name: bytes) -> bytes:
    """``\\`` -> ``\\\\``, newline -> ``\\n``, CR -> ``\\r`` (GNU print_filename)."""
    return (name.replace(b"\\", b"\\\\").replace(b"\n", b"\\n")
            .replace(b"\r", b"\\r"))


def format_line(name: bytes, hexdigest: str, *, tag: Optional[str] = None,
                binary: bool = False, zero: bool = False) -> bytes:
    """One output line of ``sha256sum``/``b2sum`` (with its line end).

    Args:
        name: the operand as given (``-`` for stdin), as bytes.
        hexdigest: the lower-case hex digest.
        tag: the BSD tag (``SHA256``, ``BLAKE2b-256``) for ``--tag``, else None.
        binary: ``-b``: ``HEX *NAME``.
        zero: ``-z``: end with NUL, never escape.
    """
    escape = not zero and needs_escape(name)
    shown = escape_name(name) if escape else name
    lead = b"\\" if escape else b""
    end = b"\0" if zero else b"\n"
    if tag is not None:
        return (lead + tag.encode() + b" (" + shown + b") = "
                + hexdigest.encode() + end)
    return (lead + hexdigest.encode() + (b" *" if binary else b"  ")
            + shown + end)


def format_status(name: bytes, status: str) -> bytes:
    """``NAME: OK`` for -c; escaped (leading ``\\``) only if NAME has a newline."""
    if b"\n" in name:
        return b"\\" + escape_name(name) + b": " + status.encode() + b"\n"
    return name + b": " + status.encode() + b"\n"


# -- input ------------------------------------------------------------------

class CheckLine(record("CheckLine", "name hexdigest bits")):  # type: ignore[misc]
    """A properly formatted line: the name to read (bytes), the expected
    digest (lower-case hex) and its length in bits."""

    __slots__ = ()


def unescape_name(data: bytes) -> Optional[bytes]:
    """Undo escape_name; None for an invalid escape or a NUL (GNU rejects them)."""
    out = bytearray()
    i, n = 0, len(data)
    while i < n:
        c = data[i]
        if c == 0x5C:  # backslash
            if i == n - 1:
                return None
            i += 1
            e = data[i]
            if e == 0x6E:
                out += b"\n"
            elif e == 0x72:
                out += b"\r"
            elif e == 0x5C:
                out += b"\\"
            else:
                return None
        elif c == 0:
            return None
        else:
            out.append(c)
        i += 1
    return bytes(out)


def _cstr(data: bytes) -> bytes:
    """What C sees of ``data``: everything before the first NUL."""
    nul = data.find(b"\0")
    return data if nul < 0 else data[:nul]


def _name_field(data: bytes, escaped: bool) -> Optional[bytes]:
    """The file name of a check line (unescaped when the line starts with a
    backslash, up to a NUL); None for an invalid escape."""
    if escaped:
        unescaped = unescape_name(data)
        if unescaped is None:
            return None
        data = unescaped
    return _cstr(data)


def _is_hex(data: bytes) -> bool:
    # translate() deletes in C: a per-byte loop cost ~15 us a check line
    return bool(data) and not data.translate(None, _HEX_DIGITS)


_C_SPACE = b" \t\n\v\f\r"


def _strtoumax(s: bytes, i: int) -> Optional[Tuple[int, int]]:
    """GNU reads the N of ``BLAKE2b-N`` with strtoumax(..., 0): blanks, an
    optional '+', then decimal, octal (``0400``) or hex (``0x100``).
    Returns (value, index after the digits), or None for no number, a '-'
    or a value beyond 2**64 - 1."""
    n = len(s)
    while i < n and s[i] in _C_SPACE:
        i += 1
    if s[i:i + 1] == b"+":
        i += 1
    base, digits = 10, b"0123456789"
    if s[i:i + 1] == b"0":
        if s[i + 1:i + 2] in (b"x", b"X") and s[i + 2:i + 3] and \
                s[i + 2] in _HEX:
            base, digits = 16, b"0123456789abcdefABCDEF"
            i += 2
        else:
            base, digits = 8, b"01234567"
    j = i
    while j < n and s[j] in digits:
        j += 1
    if j == i:
        return None
    value = int(s[i:j], base)
    if value >= 1 << 64:
        return None
    return value, j


class CheckParser:
    """Parse the lines of check files for one algorithm, as GNU split_3 does.

    Args:
        tag: the algorithm's BSD tag (``SHA256``, ``BLAKE2b``, ``MD5``).
        bits: the digest length in bits.
        variable: True for BLAKE2: the length comes from each line
            (``BLAKE2b-256 (...)`` or the number of hex digits).
        max_bits: the longest digest for a variable-length algorithm.
    """

    def __init__(self, tag: str, bits: int, *, variable: bool = False,
                 max_bits: int = 0) -> None:
        self.tag = tag.encode()
        self.bits = bits
        self.variable = variable
        self.max_bits = max_bits or bits
        # GNU keeps this across lines (and files): once a line is read in
        # one of the GNU / reversed-BSD forms, the other is refused.
        self._bsd_reversed = -1

    @staticmethod
    def strip(raw: bytes) -> Optional[bytes]:
        """A raw line (with its ``\\n``) minus line end; None to skip it.

        Comments (``#`` first) and empty lines are skipped silently.
        """
        if raw[:1] == b"#":
            return None
        if raw.endswith(b"\n"):
            raw = raw[:-1]
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        if not raw:
            return None
        return raw

    def parse(self, s: bytes) -> Optional[CheckLine]:
        """A stripped line -> CheckLine, or None if improperly formatted."""
        i = 0
        n = len(s)
        while i < n and s[i] in _WHITE:
            i += 1
        escaped = False
        if s[i:i + 1] == b"\\":
            i += 1
            escaped = True
        if s.startswith(self.tag, i):
            return self._parse_tagged(s, i + len(self.tag), escaped)
        return self._parse_gnu(s, i, escaped)

    def _parse_tagged(self, s: bytes, i: int, escaped: bool) -> Optional[CheckLine]:
        bits = self.bits
        if self.variable:
            j = i
            while j < len(s) and s[j] not in b" \t-(":
                j += 1
            if j != i:           # "BLAKE2bp": another algorithm
                return None
            if s[i:i + 1] == b"-":
                parsed = _strtoumax(s, i + 1)
                if parsed is None:
                    return None
                length, i = parsed
                if not (0 < length <= self.max_bits and length % 8 == 0):
                    return None
                bits = length
            else:
                bits = self.max_bits
        if s[i:i + 1] == b" ":
            i += 1
        if s[i:i + 1] != b"(":
            return None
        rest = s[i + 1:]
        if not rest:
            return None
        close = rest.rfind(b")")
        if close < 0:
            return None
        name = _name_field(rest[:close], escaped)
        if name is None:
            return None
        j = close + 1
        while j < len(rest) and rest[j] in _WHITE:
            j += 1
        if rest[j:j + 1] != b"=":
            return None
        j += 1
        while j < len(rest) and rest[j] in _WHITE:
            j += 1
        digest = _cstr(rest[j:])
        if len(digest) != bits // 4 or not _is_hex(digest):
            return None
        return CheckLine(name, digest.decode().lower(), bits)

    def _parse_gnu(self, s: bytes, i: int, escaped: bool) -> Optional[CheckLine]:
        n = len(s)
        if self.variable:
            j = i
            while j < n and s[j] in _HEX:
                j += 1
            hex_len = j - i
            if hex_len < 2 or hex_len % 2 or hex_len * 4 > self.max_bits:
                return None
        else:
            hex_len = self.bits // 4
            if n - i < hex_len + 2:
                return None
        digest = s[i:i + hex_len]
        i += hex_len
        if i >= n or s[i] not in _WHITE:
            return None
        if not _is_hex(_cstr(digest)) or len(_cstr(digest)) != hex_len:
            return None
        i += 1
        if n - i == 1 or s[i:i + 1] not in (b" ", b"*"):
            # "HEX NAME": the reversed BSD form; not mixed with GNU lines
            if self._bsd_reversed == 0:
                return None
            self._bsd_reversed = 1
        elif self._bsd_reversed != 1:
            self._bsd_reversed = 0
            i += 1
        name = _name_field(s[i:], escaped)
        if name is None:
            return None
        return CheckLine(name, digest.decode().lower(), hex_len * 4)


# -- messages -----------------------------------------------------------------

#: what GNU's quotef leaves bare: '#' and '~' only after the first character,
#: '{' and '}' only in a longer name; ':' is quoted (quotearg_colon)
_SAFE = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                  "0123456789%+,-./@_]")


def quotef(name: str) -> str:
    """GNU's ``quotef``: shell-escape quoting, only when the name needs it.

    ``nope`` stays as is; ``'a b'``, ``'a:b'``, ``"it's"``,
    ``'a'$'\\t''b'`` otherwise, exactly as :func:`uringtools.copy.quote`
    (and so per the LC_CTYPE locale: ``ü`` under UTF-8, ``''$'\\303\\274'``
    under LC_ALL=C).
    """
    if name and all(c in _SAFE or (c in "#~" and i > 0)
                    or (c in "{}" and len(name) > 1)
                    for i, c in enumerate(name)):
        return name
    from .copy import _quote_units, quote  # only for names that need it
    units = _quote_units(name)
    if name and not name.isascii() and all(
            text in _SAFE or (text in "#~" and i > 0)
            or (text in "{}" and len(units) > 1)
            or (kind == 1 and text >= "\x80")  # prints, in a UTF-8 locale
            for i, (text, kind) in enumerate(units)):
        return name
    return quote(name)


def locale_quote(text: str) -> str:
    """GNU's ``quote`` (locale quoting style), for arguments in messages:
    ``‘8 ’`` in a UTF-8 locale, ``'8 '`` in C; C escapes (``\\n``, ``\\\\``,
    ``\\001``) for what does not print, and ``\\'`` for a quote in C."""
    from .copy import _QUOTE_ESCAPES, _printable, _utf8_locale
    import os
    utf8 = _utf8_locale()
    left, right = ("\u2018", "\u2019") if utf8 else ("'", "'")
    raw = os.fsencode(text)
    chars = (raw.decode("utf-8", "surrogateescape") if utf8
             else raw.decode("latin-1"))
    out = [left]
    for c in chars:
        if c == "\\" or c == right:
            out.append("\\" + c)
        elif c in _QUOTE_ESCAPES:
            out.append(_QUOTE_ESCAPES[c])
        elif " " <= c < "\x7f" or (utf8 and c >= "\x80"
                                   and not "\udc80" <= c <= "\udcff"
                                   and _printable(c)):
            out.append(c)
        else:
            units = (c.encode("utf-8", "surrogateescape") if utf8
                     else [ord(c)])
            out.append("".join(f"\\{b:03o}" for b in units))
    out.append(right)
    return "".join(out)
