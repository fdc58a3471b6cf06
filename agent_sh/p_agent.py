"""p-agent's Python helper: what POSIX sh does poorly, used only when python3 is on the worker.

`sh p-agent` works fully without it. Today it has one job: fitting the command into the tmux status
bar by display width (sh and cut(1) count bytes, so they split UTF-8 and misjudge wide characters).

    python3 p_agent.py truncate WIDTH < text

Kept to Python 3.6 syntax: it runs on whatever python3 the worker has.
"""

import sys
import unicodedata

ELLIPSIS = "\u2026"


def char_width(ch: str) -> int:
    """Columns a terminal gives CH: 0 for combining marks, 2 for wide East Asian, else 1."""
    if unicodedata.combining(ch):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def one_line(text: str) -> str:
    """TEXT with tabs and newlines as spaces and other control characters dropped."""
    text = text.replace("\t", " ").replace("\n", " ")
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cc")


def truncate(text: str, width: int) -> str:
    """TEXT cut to at most WIDTH columns, ending in an ellipsis when anything was cut."""
    text = one_line(text)
    if sum(char_width(ch) for ch in text) <= width:
        return text
    out, used = [], char_width(ELLIPSIS)
    for ch in text:
        used += char_width(ch)
        if used > width:
            break
        out.append(ch)
    return "".join(out) + ELLIPSIS


def main(argv: list) -> int:
    if len(argv) != 2 or argv[0] != "truncate" or not argv[1].isdigit():
        sys.stderr.write("p-agent: usage: p_agent.py truncate WIDTH < text\n")
        return 2
    text = sys.stdin.buffer.read().decode("utf-8", "replace")
    sys.stdout.buffer.write(truncate(text, int(argv[1])).encode("utf-8"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
