# System-wide IPython configuration of the workbench images (installed as /etc/ipython/ipython_config.py).
# Every IPython shell and kernel in the image loads the workbench magic, so `%%paddle_launch` works in a
# fresh notebook without `%load_ext`. A user can still turn it off in ~/.ipython/profile_default.
c = get_config()  # noqa: F821 (IPython provides get_config when it loads this file)
c.InteractiveShellApp.extensions = ["launcher_magic"]
