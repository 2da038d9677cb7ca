"""mmbench's tests, laid out as the source tree: `core/` mirrors `mmbench/`, `plugins/` mirrors `plugins/`, and
`fixtures/` holds the writers of generated data (tiny copies of each dataset's real layout)."""

from pathlib import Path

#: the repository's root
ROOT = Path(__file__).resolve().parent.parent
