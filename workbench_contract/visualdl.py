"""How a VisualDL board of the workbench is started and reached, shared by the kernel's `%visualdl`
(launcher_magic) and the Jupyter server's proxy entry (extensions).

A board is `python -m <SERVER_MODULE>`; it answers only requests that carry its key (see
`extensions.visualdl_server`). The key travels in the board's environment (`TOKEN_ENV`), in a header
the proxy adds (`TOKEN_HEADER`), or once in a link's query (`TOKEN_QUERY`).
"""

SERVER_MODULE = "extensions.visualdl_server"
TOKEN_ENV = "WORKBENCH_VISUALDL_TOKEN"
TOKEN_HEADER = "X-Workbench-VisualDL-Token"
TOKEN_QUERY = "workbench_token"
