"""GNU cat's formatting options (-b -E -n -s -T -v) as a stateful filter.

State (line number, blank-line run) carries across chunks and files, as it
does in GNU cat.
"""

from __future__ import annotations

from .records import record
TYPE_CHECKING = False  # typing costs ~13 ms of start-up: annotations only
if TYPE_CHECKING:
    from typing import Callable, List


class CatFormat(record(  # type: ignore[misc]
        "CatFormat", "number number_nonblank squeeze_blank show_ends "
        "show_tabs show_nonprinting",
        defaults=(False, False, False, False, False, False))):
    """Which of GNU cat's output transformations are on (bools): number
    (-n), number_nonblank (-b, overrides -n), squeeze_blank (-s),
    show_ends (-E), show_tabs (-T), show_nonprinting (-v)."""

    __slots__ = ()

    @property
    def active(self) -> bool:
        """True when output differs from input."""
        return any((self.number, self.number_nonblank, self.squeeze_blank,
                    self.show_ends, self.show_tabs, self.show_nonprinting))


def _caret(ch: int, show_tabs: bool) -> bytes:
    """GNU cat -v notation for one byte."""
    if ch >= 128:
        rest = ch - 128
        if rest >= 32:
            return b"M-" + (bytes([rest]) if rest < 127 else b"^?")
        return b"M-^" + bytes([rest + 64])
    if ch == 127:
        return b"^?"
    if ch == 9 and not show_tabs:
        return b"\t"
    if ch < 32:
        return b"^" + bytes([ch + 64])
    return bytes([ch])


class CatFormatter:
    """Feed chunks in order; get GNU cat's formatted bytes back."""

    def __init__(self, fmt: CatFormat) -> None:
        self.fmt = fmt
        self.number = fmt.number or fmt.number_nonblank
        self.number_blank = fmt.number and not fmt.number_nonblank
        self.newlines = 0   # GNU's counter: -1 mid-line, 0 at a line start, >0 blank lines
        self.line_no = 0
        # GNU 9.1 -E (without -v) shows "\r\n" as "^M$"; a "\r" ending a
        # chunk waits for the next byte to know which it is.
        self.cr_as_caret = fmt.show_ends and not fmt.show_nonprinting
        self.pending_cr = False
        self._render = self._make_renderer()

    def _make_renderer(self) -> Callable[[bytes], bytes]:
        fmt = self.fmt
        if fmt.show_nonprinting:
            table = [_caret(ch, fmt.show_tabs) for ch in range(256)]
            special = rb"[\x00-\x08\x0b-\x1f\x7f-\xff]" if not fmt.show_tabs \
                else rb"[\x00-\x09\x0b-\x1f\x7f-\xff]"
            import re   # only for -v: ~4 ms of start-up
            pattern = re.compile(special)
            return lambda seg: pattern.sub(lambda m: table[m.group()[0]], seg)
        if fmt.show_tabs:
            return lambda seg: seg.replace(b"\t", b"^I")
        return lambda seg: seg

    def _next_number(self) -> bytes:
        self.line_no += 1
        return b"%6d\t" % self.line_no

    def feed(self, data: bytes) -> bytes:
        """Format one chunk of input."""
        out: List[bytes] = []
        fmt = self.fmt
        end_mark = b"$\n" if fmt.show_ends else b"\n"
        pos, size = 0, len(data)
        if self.pending_cr and size:
            self.pending_cr = False
            out.append(b"^M" if data[0] == 10 else b"\r")
        while pos < size:
            if data[pos] == 10:
                self.newlines += 1
                if self.newlines > 0:
                    if self.newlines >= 2:
                        self.newlines = 2
                        if fmt.squeeze_blank:
                            pos += 1
                            continue
                    if self.number_blank:
                        out.append(self._next_number())
                out.append(end_mark)
                pos += 1
                continue
            if self.newlines >= 0 and self.number:
                out.append(self._next_number())
            self.newlines = -1
            nl = data.find(b"\n", pos)
            end = size if nl < 0 else nl
            if self.cr_as_caret and data[end - 1] == 13:
                out.append(self._render(data[pos:end - 1]))
                if nl < 0:
                    self.pending_cr = True
                else:
                    out.append(b"^M")
            else:
                out.append(self._render(data[pos:end]))
            pos = end
        return b"".join(out)

    def flush(self) -> bytes:
        """What is still held back at the end of all input (a lone "\r")."""
        if self.pending_cr:
            self.pending_cr = False
            return b"\r"
        return b""
