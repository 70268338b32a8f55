"""The cluster engine's access to the API server, and what it says when a request fails.

`ClusterApi` loads the notebook's credentials once (the service account's in-cluster config in a
pod, a kubeconfig outside one) and makes every request through `call`, which turns each way a
request can fail into an `EngineError` whose message says what failed and what to do: a tenant
admission policy's rule, an admission webhook's words, RBAC's refusal, no answer at all. The
`kubernetes` package is imported on first use, so the engine loads without it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from urllib3.exceptions import HTTPError

from launcher_magic.engines.base import EngineError, EngineUnavailable

IN_CLUSTER_TOKEN = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")


def api_message(err) -> str:
    """The `message` of an API server's error body ("" when it has none)."""
    try:
        return json.loads(err.body or "{}").get("message") or ""
    except (TypeError, ValueError):
        return ""


def policy_refusal(err) -> str:
    """What an admission policy said when it refused a request ("" for other refusals): the
    rule and what to change, without the API server's preamble."""
    _, found, said = api_message(err).partition("denied request: ")
    return said.strip() if found else ""


def webhook_refusal(err) -> str:
    """What an admission webhook (the training operator's, Trainer's, Kueue's) said when it
    refused a request ("" for other refusals)."""
    message = api_message(err)
    return message.strip() if "admission webhook" in message and "denied" in message else ""


def stream_text(response) -> Iterator[str]:
    """Decoded lines of a streamed HTTP response, as they arrive."""
    pending = b""
    for chunk in response.stream(amt=None, decode_content=True):
        pending += chunk
        *complete, pending = pending.split(b"\n")
        for line in complete:
            yield line.decode("utf-8", errors="replace")
    if pending:
        yield pending.decode("utf-8", errors="replace")


class ClusterApi:
    """The API clients of one engine (`core`, `custom`), made at the first request.

    Args:
        what: the engine's name, for messages ("the trainjob engine needs ...").
        kubeconfig: used outside a cluster ("": none).
        request_timeout: seconds one request may take before it counts as failed.
    """

    def __init__(self, what: str, kubeconfig: str, request_timeout: float):
        self.what, self.kubeconfig, self.request_timeout = what, kubeconfig, request_timeout
        self._clients = None

    def clients(self):
        """(CoreV1Api, CustomObjectsApi). Raises EngineUnavailable where there is no cluster."""
        if self._clients is not None:
            return self._clients
        try:
            from kubernetes import client, config
        except ImportError:
            raise EngineUnavailable(
                f"the {self.what} engine needs the `kubernetes` package: pip install kubernetes"
            ) from None
        try:
            if os.environ.get("KUBERNETES_SERVICE_HOST") and IN_CLUSTER_TOKEN.exists():
                config.load_incluster_config()
                api_client = client.ApiClient()
            elif self.kubeconfig:
                api_client = config.new_client_from_config(config_file=self.kubeconfig)
            else:
                raise EngineUnavailable(
                    f"the {self.what} engine finds no cluster: run in a hub-spawned server in "
                    "the cluster, or set KUBECONFIG")
        except config.ConfigException as err:
            raise EngineUnavailable(
                f"the {self.what} engine cannot load its config: {err}") from None
        self._clients = (client.CoreV1Api(api_client), client.CustomObjectsApi(api_client))
        return self._clients

    @property
    def core(self):
        return self.clients()[0]

    @property
    def custom(self):
        return self.clients()[1]

    @property
    def networking(self):
        from kubernetes import client

        return client.NetworkingV1Api(self.core.api_client)

    def plain(self, obj) -> dict:
        """A client model object as the plain dict the API server sent."""
        return self.core.api_client.sanitize_for_serialization(obj)

    def call(self, action: str, method, *args, missing_ok: bool = False, **kwargs):
        """One API request; its failures become an EngineError that says what failed and why.

        Returns None for a 404 when `missing_ok`.
        """
        from kubernetes.client.exceptions import ApiException

        kwargs.setdefault("_request_timeout", self.request_timeout)
        try:
            return method(*args, **kwargs)
        except ApiException as err:
            if missing_ok and err.status == 404:
                return None
            raise EngineError(self._refusal(action, err)) from None
        except (HTTPError, OSError) as err:  # no answer: a wrong address, a cluster that is down
            host = self.core.api_client.configuration.host
            raise EngineError(
                f"{action}: the cluster is unreachable, try again in a minute (no answer from "
                f"the Kubernetes API server at {host}: {err.__class__.__name__}; if it lasts, "
                "check KUBECONFIG or ask your operator)") from None

    @staticmethod
    def _refusal(action: str, err) -> str:
        policy = policy_refusal(err)
        if policy:  # the tenant's admission policy: its rule says what to change
            return f"{action} was refused by your tenant's policy ({err.status}): {policy}"
        webhook = webhook_refusal(err)
        if webhook:  # e.g. Trainer's: the runtime the job names is not installed
            return f"{action} was refused ({err.status}): {webhook}"
        if err.status == 403:
            return (f"{action} was refused (403 Forbidden): your tenant's service account may "
                    "not do that; ask an operator to provision the tenant")
        reason = getattr(err, "reason", "") or str(err)
        return f"{action} failed: {err.status} {reason}".strip()

    def get_path(self, path: str, _request_timeout=None) -> dict:
        """GET `path` (a resource the generated client has no method for, such as a subresource
        of an aggregated API) with the client's credentials; a refusal raises its
        ApiException. Made through `call` like any other request."""
        api_client = self.core.api_client
        request = api_client.param_serialize(method="GET", resource_path=path,
                                             header_params={"Accept": "application/json"},
                                             auth_settings=["BearerToken"])
        response = api_client.call_api(*request, _request_timeout=_request_timeout)
        response.read()
        return api_client.response_deserialize(response, {"200": "object"}).data
