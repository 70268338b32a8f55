"""Paddle Workbench's IPython extension: `%%paddle_launch` and the job line magics.

Load it with `%load_ext launcher_magic`.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython) -> None:
    from launcher_magic.kernel.magics import PaddleMagics

    ipython.register_magics(PaddleMagics(ipython))


def unload_ipython_extension(ipython) -> None:
    from launcher_magic.kernel.magics import stop_session_jobs

    stop_session_jobs()
