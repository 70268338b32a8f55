"""What runs in each training rank: the rank wrapper (`worker`) and what user cells import
(`checkpoint`, `metrics`; also importable as `launcher_magic.checkpoint` and `launcher_magic.metrics`)."""
