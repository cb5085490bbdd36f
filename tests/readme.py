"""Read the code examples out of README.md, so that the README's examples are tested."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example(section: str) -> str:
    """The first ```python block between `<!-- section: NAME -->` and `<!-- end: NAME -->`."""
    text = README.read_text()
    match = re.search(
        rf"<!-- section: {re.escape(section)} -->(.*?)<!-- end: {re.escape(section)} -->",
        text,
        re.S,
    )
    if match is None:
        raise LookupError(f"README.md has no section {section!r}")
    code = re.search(r"```python\n(.*?)```", match.group(1), re.S)
    if code is None:
        raise LookupError(f"README.md section {section!r} has no ```python block")
    return code.group(1)
