"""The GPU-idle culler: a JupyterHub service that stops notebook servers whose GPUs sit idle.

Each round it asks Prometheus how long every workbench notebook server and job in each tenant's
namespace has kept its GPUs under the tenant's threshold (the recording rules in
deploy/monitoring), asks the hub which server runs in which pod (KubeSpawner's `namespace` and
`pod_name` in the server's state), decides with `hub_config.services.gpu_idle.decide`, and
acts: warn (logged; JupyterHub has no API for a notice to a user, so the warning is a log line an
operator's log pipeline can forward), stop the server through the hub's REST API, and for jobs
call `job_stopper` (none is configured until the Kubernetes job engine provides one: the culler
then logs "would stop job"). Every action is logged with its reason; `--dry-run` logs what it
would do and changes nothing (it still needs its token: only the hub says whose a pod is).

Pod labels are not trusted: whoever creates a pod writes them. The tenant (and so the policy) is
the one whose namespace the series is in, and a series stops a server only when the hub's own
record says that server runs in that pod of that namespace; the server stopped is the one the hub
names (named servers included), whatever the labels say. A GPU series of any other pod is logged
once and left alone.

Run it as a hub service with its own token and only these scopes::

    c.JupyterHub.services = [{"name": "gpu-culler", "command": [
        sys.executable, "-m", "hub_config.services.gpu_culler", "--tenants-file=/etc/workbench/tenants.yaml",
        "--prometheus-url=http://prometheus.monitoring.svc:9090"]}]
    c.JupyterHub.load_roles = [{"name": "gpu-culler", "services": ["gpu-culler"],
                                "scopes": list(HUB_SCOPES)}]

`HUB_SCOPES`: `list:users` and `read:servers` (which servers run), `admin:server_state` (in which
pod: JupyterHub shows a server's state to this scope only) and `delete:servers` (stop one).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest
from traitlets import Bool, Callable, Float, Unicode, default
from traitlets.config import Application

from hub_config.services.gpu_idle import (
    CLEAR,
    JOB,
    REPORT,
    SERVER,
    STOP,
    WARN,
    Action,
    HubServer,
    Observation,
    attribute_servers,
    decide,
    hub_servers,
    idle_queries,
    namespaces_of,
    observations_from_results,
    policies_from_tenants,
)
from hub_config.tenants import GpuIdlePolicy, Tenants, TenantsFileError, load_tenants

# The hub scopes this service needs, and nothing more (see the module docstring).
HUB_SCOPES = ("list:users", "read:servers", "admin:server_state", "delete:servers")
# Users per page when listing the hub's servers (JupyterHub's maximum page size by default).
PAGE_SIZE = 200


class CullerError(RuntimeError):
    """A failure of one round that names the setting to fix; the service logs it and goes on."""


def read_tenants(path: Path) -> Tenants:
    """The tenants file, loaded by `hub_config.tenants.load_tenants` exactly as the hub loads
    it, so a file the hub would refuse is refused here too, with the loader's one-line message
    (file, tenant, field). Raises CullerError."""
    try:
        return load_tenants(path)
    except TenantsFileError as err:
        # The loader says what to fix in the file; when there is no file, the setting may be wrong.
        hint = "" if path.is_file() else "; or set --GpuIdleCuller.tenants_file"
        raise CullerError(f"{err}{hint}") from None


def read_policies(path: Path) -> dict[str, GpuIdlePolicy]:
    """The GPU-idle policies of a tenants file, by tenant name. Raises CullerError."""
    return policies_from_tenants(read_tenants(path))


def server_url(hub_api_url: str, user: str, server: str) -> str:
    """The hub API URL of one server. Names are percent-encoded: a label value must never be able
    to reach another API path (a user named '../admin' stays one path segment)."""
    base = f"{hub_api_url.rstrip('/')}/users/{quote(user, safe='')}"
    return f"{base}/servers/{quote(server, safe='')}" if server else f"{base}/server"


class GpuIdleCuller(Application):
    """Warns about and stops notebook servers (and jobs) whose GPUs stayed idle."""

    name = "workbench-gpu-culler"
    description = "Stop notebook servers whose GPUs stayed idle past their tenant's limit."

    prometheus_url = Unicode(
        "http://prometheus-operated.monitoring.svc:9090",
        help="""Base URL of the Prometheus that has the workbench recording rules loaded.""",
    ).tag(config=True)
    hub_api_url = Unicode(
        help="""The hub's REST API (default: $JUPYTERHUB_API_URL, set for hub services).""",
    ).tag(config=True)
    api_token = Unicode(
        help="""Token of this service (default: $JUPYTERHUB_API_TOKEN). It needs the scopes
        list:users, read:servers, admin:server_state and delete:servers (HUB_SCOPES), nothing
        more. Never logged.""",
    ).tag(config=True)
    tenants_file = Unicode(
        "tenants.yaml", help="""The tenants file. It is validated as the hub validates it and
        read again every round, so a policy change needs no restart; each tenant's idle.gpu
        is its policy (tenants without one are never culled).""",
    ).tag(config=True)
    interval = Float(300.0, help="""Seconds between rounds.""").tag(config=True)
    dry_run = Bool(False, help="""Log what would be done; stop nothing.""").tag(config=True)
    smoothing_window = Float(
        300.0, help="""Seconds of the mean a GPU utilisation reading is (the alert uses 5 m).""",
    ).tag(config=True)
    query_step = Float(
        60.0, help="""Resolution in seconds of the idle-time queries: idle time is known to
        within one step.""",
    ).tag(config=True)
    server_metric = Unicode("workbench:notebook_gpu_utilisation:avg",
                            help="""Per-server GPU utilisation series.""").tag(config=True)
    job_metric = Unicode("workbench:job_gpu_utilisation:avg",
                         help="""Per-job GPU utilisation series.""").tag(config=True)
    request_timeout = Float(30.0, help="""Seconds per HTTP request.""").tag(config=True)
    job_stopper = Callable(
        None, allow_none=True,
        help="""async or plain callable(observation) that stops a job, given by the job
        engine. None: the culler logs "would stop job" and stops nothing.""",
    ).tag(config=True)

    aliases = {
        "prometheus-url": "GpuIdleCuller.prometheus_url",
        "hub-api-url": "GpuIdleCuller.hub_api_url",
        "tenants-file": "GpuIdleCuller.tenants_file",
        "interval": "GpuIdleCuller.interval",
        "smoothing-window": "GpuIdleCuller.smoothing_window",
        "query-step": "GpuIdleCuller.query_step",
        "log-level": "Application.log_level",
    }
    flags = {"dry-run": ({"GpuIdleCuller": {"dry_run": True}}, "log actions, change nothing")}

    @default("hub_api_url")
    def _hub_api_url(self) -> str:
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    @default("api_token")
    def _api_token(self) -> str:
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.warned: dict[str, float] = {}
        # Pods already reported as matching no hub server, so each is logged once, not per round.
        self.unknown_pods: set[tuple[str, str]] = set()
        self.http = AsyncHTTPClient()

    # --- Prometheus ---------------------------------------------------------------------------

    async def query(self, promql: str) -> list[dict]:
        """An instant query; returns the `result` list. Raises CullerError."""
        url = f"{self.prometheus_url.rstrip('/')}/api/v1/query"
        request = HTTPRequest(url, method="POST", body=urlencode({"query": promql}),
                              request_timeout=self.request_timeout)
        try:
            response = await self.http.fetch(request)
        except HTTPClientError as err:
            body = err.response.body.decode(errors="replace")[:300] if err.response else ""
            raise CullerError(f"Prometheus at {url} answered {err.code} {body}; check "
                              "--GpuIdleCuller.prometheus_url and the query") from None
        except OSError as err:
            raise CullerError(f"cannot reach Prometheus at {url} ({err}); set "
                              "--GpuIdleCuller.prometheus_url") from None
        payload = json.loads(response.body)
        if payload.get("status") != "success":
            raise CullerError(f"Prometheus refused a query: {payload.get('error')}")
        return payload["data"]["result"]

    async def observe_gpus(self, tenants: Tenants) -> list[Observation]:
        """What runs on GPUs in the namespace of every tenant with a GPU policy, and how long it
        has been idle. Server observations name a pod, not yet a hub server (`cull_once` asks the
        hub)."""
        policies, namespaces = policies_from_tenants(tenants), namespaces_of(tenants)
        observations: list[Observation] = []
        for tenant, policy in sorted(policies.items()):
            for kind, metric in ((SERVER, self.server_metric), (JOB, self.job_metric)):
                queries = idle_queries(metric, namespaces[tenant], policy,
                                       self.smoothing_window, self.query_step)
                results = {name: await self.query(q) for name, q in queries.items()}
                observations.extend(observations_from_results(kind, results, policy, tenant))
        return observations

    # --- the hub --------------------------------------------------------------------------------

    async def hub(self, method: str, url: str, **headers: str) -> tuple[int, dict | list | None]:
        """One hub API call with this service's token; returns (status, JSON body or None)."""
        request = HTTPRequest(url, method=method, request_timeout=self.request_timeout,
                              headers={"Authorization": f"token {self.api_token}", **headers},
                              allow_nonstandard_methods=True)
        try:
            response = await self.http.fetch(request, raise_error=False)
        except OSError as err:
            raise CullerError(f"cannot reach the hub API ({err}); set "
                              "--GpuIdleCuller.hub_api_url") from None
        if response.code == 599:
            raise CullerError(f"cannot reach the hub API ({response.error}); set "
                              "--GpuIdleCuller.hub_api_url")
        body = json.loads(response.body) if response.body else None
        return response.code, body

    async def list_servers(self) -> dict[tuple[str, str], HubServer]:
        """The hub's running servers by (namespace, pod), read page by page. Raises CullerError
        naming the scope the hub refused."""
        base = self.hub_api_url.rstrip("/")
        users: list[dict] = []
        offset: int | None = 0
        while offset is not None:
            query = urlencode({"state": "active", "offset": offset, "limit": PAGE_SIZE})
            code, body = await self.hub("GET", f"{base}/users?{query}",
                                        Accept="application/jupyterhub-pagination+json")
            if code == 403:
                raise CullerError("the hub refused to list users (403); give this service the "
                                  "scope list:users")
            if code != 200 or not isinstance(body, dict):
                raise CullerError(f"the hub answered {code} when asked for its servers")
            users.extend(body.get("items") or [])
            offset = ((body.get("_pagination") or {}).get("next") or {}).get("offset")
        try:
            return hub_servers(users)
        except ValueError as err:
            raise CullerError(str(err)) from None

    async def stop_server(self, obs: Observation) -> str:
        """Stop one server, named as the hub names it, through the hub; returns what happened,
        for the log."""
        code, _ = await self.hub("DELETE", server_url(self.hub_api_url, obs.user, obs.name))
        if code in (202, 204):
            return "stopped" if code == 204 else "stopping"
        if code == 403:
            return "refused by the hub (403): give this service the scope delete:servers"
        if code in (400, 404):
            return f"skipped: the hub answered {code} (the server stopped meanwhile)"
        return f"failed: the hub answered {code}"

    async def stop_job(self, obs: Observation) -> str:
        if self.job_stopper is None:
            return "would stop job: no job engine is configured for the culler"
        result = self.job_stopper(obs)
        if asyncio.iscoroutine(result):
            await result
        return "stopped"

    # --- one round ------------------------------------------------------------------------------

    async def cull_once(self, now: float | None = None) -> list[tuple[Action, str]]:
        """One round: observe, decide, act. Returns each action with its outcome."""
        now = time.time() if now is None else now
        tenants = read_tenants(Path(self.tenants_file))
        policies = policies_from_tenants(tenants)
        observed = await self.observe_gpus(tenants)
        observations, unknown = attribute_servers(observed, await self.list_servers())
        self.report_unknown(unknown)
        actions, self.warned = decide(observations, policies, now, self.warned)
        done = []
        for action in actions:
            outcome = await self.act(action)
            done.append((action, outcome))
        self.log.debug("GPU-idle round: %d observed, %d actions", len(observations), len(actions))
        return done

    def report_unknown(self, unknown: list[Observation]) -> None:
        """Log, once per pod, a GPU series of a pod that is no hub server (a job pod labelled as
        a notebook, or a pod labelled as someone else's): it is never acted on."""
        pods = {(o.namespace, o.pod) for o in unknown}
        for namespace, pod in sorted(pods - self.unknown_pods):
            self.log.warning("Ignoring the GPUs of pod %s/%s: it is labelled as a notebook "
                             "server, but no hub server runs in it", namespace, pod)
        self.unknown_pods = pods

    async def act(self, action: Action) -> str:
        obs = action.target
        what = obs.describe()
        if action.verb == WARN:
            self.log.warning("Warning %s: %s", what, action.reason)
            return "warned (logged; the hub has no notice API)"
        if action.verb == REPORT:
            self.log.warning("Reporting %s: %s", what, action.reason)
            return "reported"
        if action.verb == CLEAR:
            self.log.info("Clearing the warning of %s: %s", what, action.reason)
            return "cleared"
        assert action.verb == STOP, action.verb
        if self.dry_run:
            self.log.info("Dry run, not stopping %s: %s", what, action.reason)
            return "dry run"
        try:
            outcome = await (self.stop_job(obs) if obs.kind == JOB else self.stop_server(obs))
        except CullerError as err:
            outcome = f"failed: {err}"
        log = self.log.info if outcome in ("stopped", "stopping") else self.log.error
        log("Stopping %s: %s -> %s", what, action.reason, outcome)
        return outcome

    async def run_forever(self) -> None:
        self.log.info("GPU-idle culler: Prometheus %s, tenants %s, every %.0f s%s",
                      self.prometheus_url, self.tenants_file, self.interval,
                      " (dry run)" if self.dry_run else "")
        while True:
            try:
                await self.cull_once()
            except CullerError as err:
                self.log.error("GPU-idle round failed: %s", err)
            await asyncio.sleep(self.interval)

    def start(self) -> None:
        if not self.api_token:
            # Even a dry run asks the hub which server runs in which pod: labels are no answer.
            self.log.critical("No hub API token: run me as a hub service, which sets "
                              "JUPYTERHUB_API_TOKEN (never put a token on the command line)")
            self.exit(2)
        try:
            asyncio.run(self.run_forever())
        except KeyboardInterrupt:
            pass


def main(argv: list[str] | None = None) -> None:
    GpuIdleCuller.launch_instance(argv)


if __name__ == "__main__":
    main(sys.argv[1:])
