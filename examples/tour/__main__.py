"""The tour: every pattern on embedded defaults (memory, SQLite, an in-memory broker).

Run it with ``make demo`` or ``python examples/tour``. Each chapter is a module named
``ch<N>_<block>.py`` beside this file with a ``TITLE`` and a ``run()`` that prints what
its pattern did; they run in order.
"""

from __future__ import annotations

import importlib
import logging
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def chapters() -> list[str]:
    return sorted(
        (p.stem for p in HERE.glob("ch*_*.py")), key=lambda name: int(name[2:].split("_")[0])
    )


def main() -> int:
    sys.path.insert(0, str(HERE))
    # Warnings the blocks log (a breaker opening, say) appear in line with the chapter.
    logging.basicConfig(stream=sys.stdout, format="   [log] %(name)s: %(message)s")
    names = chapters()
    print(f"scalepatterns tour: {len(names)} chapters, no servers needed\n")
    for number, name in enumerate(names, start=1):
        chapter = importlib.import_module(name)
        print(f"== {number}. {chapter.TITLE} ==")
        started = time.perf_counter()
        chapter.run()
        print(f"   ({time.perf_counter() - started:.2f}s)\n")
    print("tour complete")
    return 0


if __name__ == "__main__":
    sys.exit(main())
