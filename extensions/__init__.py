"""Jupyter server side of Paddle Workbench: VisualDL behind jupyter-server-proxy.

- `extensions.visualdl_proxy`: the `jupyter_serverproxy_servers` entry point (the `visualdl` board
  over the user's whole jobs root, with a JupyterLab launcher entry and icon).
- `extensions.visualdl_server`: how every VisualDL board of the workbench is run (the proxy's and
  the `%visualdl` magic's): VisualDL's own app, loopback only, no telemetry, and response headers
  that let only the user's own server origin frame it.

This package imports `workbench_contract` (the board's module name and key names) and never
`launcher_magic` or `hub_config`: the Jupyter server and the kernel meet only in the contract.
"""
