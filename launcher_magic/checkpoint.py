"""`from launcher_magic.checkpoint import Checkpointer`: what training cells import.

The code lives in `launcher_magic.training.checkpoint` (it runs in each training rank).
"""

from launcher_magic.training.checkpoint import Checkpointer, latest_step, list_checkpoints

__all__ = ["Checkpointer", "latest_step", "list_checkpoints"]
