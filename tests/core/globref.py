"""A deliberately simple reference matcher for rsync-style patterns.

Written straight from rsync(1) "INCLUDE/EXCLUDE PATTERN RULES", sharing no
code with ``powernode.core.globs``: it walks pattern tokens with recursive
backtracking and tries the path's component-boundary suffixes one by one,
where the real matcher compiles one regular expression. Slow on purpose;
only the property tests use it.
"""

from __future__ import annotations

from functools import cache

_POSIX = {
    "alnum": lambda c: c.isascii() and c.isalnum(),
    "alpha": lambda c: c.isascii() and c.isalpha(),
    "digit": lambda c: c in "0123456789",
    "lower": lambda c: "a" <= c <= "z",
    "upper": lambda c: "A" <= c <= "Z",
    "space": lambda c: c in " \t\n\r\f\v",
}


def _tokens(pattern: str) -> tuple[tuple[object, ...], ...]:
    out: list[tuple[object, ...]] = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            out.append(("lit", pattern[i + 1]))
            i += 2
        elif c == "*":
            n = 0
            while i < len(pattern) and pattern[i] == "*":
                n += 1
                i += 1
            out.append(("star",) if n == 1 else ("dstar",))
        elif c == "?":
            out.append(("one",))
            i += 1
        elif c == "[":
            i += 1
            neg = pattern[i] in "!^"
            if neg:
                i += 1
            tests = []
            first = True
            while first or pattern[i] != "]":
                first = False
                if pattern.startswith("[:", i) and ":]" in pattern[i + 2 :]:
                    end = pattern.index(":]", i + 2)
                    tests.append(_POSIX[pattern[i + 2 : end]])
                    i = end + 2
                    continue
                lo = pattern[i]
                if lo == "\\":
                    i += 1
                    lo = pattern[i]
                i += 1
                if pattern[i] == "-" and pattern[i + 1] != "]":
                    hi = pattern[i + 1]
                    i += 2
                    if hi == "\\":
                        hi = pattern[i]
                        i += 1
                    tests.append(lambda c, lo=lo, hi=hi: lo <= c <= hi)
                else:
                    tests.append(lambda c, lo=lo: c == lo)
            i += 1
            out.append(("class", neg, tuple(tests)))
        else:
            out.append(("lit", c))
            i += 1
    return tuple(out)


def _match(toks: tuple[tuple[object, ...], ...], s: str) -> bool:
    @cache
    def go(ti: int, si: int) -> bool:
        if ti == len(toks):
            return si == len(s)
        t = toks[ti]
        kind = t[0]
        if kind == "star":  # any run without "/"
            k = si
            while True:
                if go(ti + 1, k):
                    return True
                if k == len(s) or s[k] == "/":
                    return False
                k += 1
        if kind == "dstar":  # anything
            return any(go(ti + 1, k) for k in range(si, len(s) + 1))
        if si == len(s):
            return False
        c = s[si]
        if kind == "lit":
            ok = c == t[1]
        elif kind == "one":
            ok = c != "/"
        else:
            hit = any(test(c) for test in t[2])  # type: ignore[attr-defined]
            ok = c != "/" and hit != t[1]
        return ok and go(ti + 1, si + 1)

    return go(0, 0)


def ref_matches(pattern: str, path: str, is_dir: bool = False) -> bool:
    """Does rsync's rule set say ``pattern`` matches ``path``?"""
    if len(path) > 1 and path.endswith("/"):
        path, is_dir = path[:-1], True
    # "dir/***": the directory (as "dir/") or anything in it (as "dir/**").
    if pattern.endswith("/***") and not pattern.endswith("/****"):
        head = pattern[:-4]
        return ref_matches(head + "/", path, is_dir) or ref_matches(head + "/**", path, is_dir)
    # A trailing "/" matches directories only.
    if len(pattern) > 1 and pattern.endswith("/"):
        if not is_dir:
            return False
        pattern = pattern[:-1]
    rel = path[1:]  # the path as rsync sees it, relative to the transfer root
    if pattern.startswith("/"):  # anchored: the whole path from the root
        return _match(_tokens(pattern[1:]), rel)
    # Otherwise: the end of the path, starting at a component boundary.
    toks = _tokens(pattern)
    starts = [0] + [k + 1 for k, c in enumerate(rel) if c == "/"]
    return any(_match(toks, rel[k:]) for k in starts)
