"""`from launcher_magic.metrics import ScalarLogger`: what training cells import.

The code lives in `launcher_magic.training.metrics` (it runs in each training rank).
"""

from launcher_magic.training.metrics import ScalarLogger

__all__ = ["ScalarLogger"]
