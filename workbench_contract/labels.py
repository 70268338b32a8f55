"""Kubernetes labels the workbench puts on every pod it makes.

NetworkPolicies select on them (traffic inside one job), the monitoring rules join GPU metrics
with them (per tenant, user and job). The GPU-idle culler does not trust them: it matches the
hub's own record of each server (namespace and pod name).
"""

PREFIX = "workbench.paddle.org"

LABEL_TENANT = f"{PREFIX}/tenant"
LABEL_USER = f"{PREFIX}/user"
LABEL_JOB = f"{PREFIX}/job"
LABEL_COMPONENT = f"{PREFIX}/component"
# The hub's server name on a notebook pod ("" or absent: the user's default server), so the GPU-idle
# culler can stop the right one of a user's named servers.
LABEL_SERVER = f"{PREFIX}/server"

COMPONENT_NOTEBOOK = "notebook"
COMPONENT_JOB_WORKER = "job-worker"
