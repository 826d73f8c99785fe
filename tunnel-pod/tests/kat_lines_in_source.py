#!/usr/bin/python3
"""Fail unless every `name=hex` line on stdin appears in the given Rust sources.

The IKE verify_*.py scripts recompute known answers independently and print them as `name=hex`
lines for the Rust tests to hard-code; printing alone checks nothing. This closes the loop: each
printed value must occur in the Rust file whose tests use it (string literals split across
`concat!("…", "…")` or `\\`-continued lines are joined before the search).

Usage: /usr/bin/python3 verify_sk.py | /usr/bin/python3 kat_lines_in_source.py src/crypto/sk.rs
"""

import re
import sys

LINE = re.compile(r"^([\w .-]+?)=([0-9a-fA-F]+)$")


def joined(path):
    text = open(path, encoding="utf-8").read()
    # "abc",\n    "def"  and  "abc\\\n    def"  become  "abcdef".
    text = re.sub(r'"\s*,\s*"', "", text)
    text = re.sub(r"\\\n\s*", "", text)
    return text.lower()


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    source = "\n".join(joined(p) for p in sys.argv[1:])
    checked, missing = 0, []
    for line in sys.stdin.read().splitlines():
        m = LINE.match(line.strip())
        if not m:
            continue
        name, value = m.group(1), m.group(2).lower()
        checked += 1
        if value not in source:
            missing.append(name)
    print(f"{checked} printed values checked against {', '.join(sys.argv[1:])}")
    if checked == 0:
        sys.exit("no name=hex lines on stdin: the verify script printed nothing to check")
    if missing:
        sys.exit(f"not in the Rust sources (stale or mistyped known answers): {missing}")


if __name__ == "__main__":
    main()
