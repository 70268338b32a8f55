"""docs/architecture.md maps the code: every module of the product is named there.

The map's tables name each module by its path; a module added without a line in the map, or a
line left for a module that is gone, fails here with the paths to add or remove.
"""

from __future__ import annotations

import re
from pathlib import Path

from tests.test_code_size import product_files

ROOT = Path(__file__).resolve().parents[1]
MAP = ROOT / "docs" / "architecture.md"
# A module's path in backticks, as the map's rows give it.
MODULE = re.compile(r"`((?:workbench_contract|hub_config|launcher_magic|extensions|deploy|images)"
                    r"/[\w/.-]+\.py)`")


def mapped(text: str) -> set[str]:
    return set(MODULE.findall(text))


def modules() -> set[str]:
    """Every product module but package markers (`__init__.py`: their package is mapped)."""
    return {str(path.relative_to(ROOT)) for path in product_files()
            if path.name != "__init__.py"}


def test_every_module_is_on_the_map_and_nothing_else():
    on_map = mapped(MAP.read_text())
    assert sorted(modules() - on_map) == []  # add these to docs/architecture.md
    assert sorted(on_map - modules()) == []  # these are gone: take them off the map


def test_the_check_sees_a_module_missing_from_the_map():
    text = MAP.read_text().replace("`launcher_magic/engines/cluster/reader.py`", "reader")
    assert modules() - mapped(text) == {"launcher_magic/engines/cluster/reader.py"}
