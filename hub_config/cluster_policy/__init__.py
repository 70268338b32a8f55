"""The cluster policy: everything the workbench asks of a Kubernetes cluster for its tenants.

Pure builders (tenant in, dicts out), used by the operator's CLI (`workbench render/apply`,
`workbench images`) and the hub (`kube_spawner` makes each user's identity); only `apply` talks
to the API server.

- `bundle`: a tenant's namespace bundle, in apply order (Namespace, admission policies, Roles,
  ResourceQuota, LimitRange, NetworkPolicies, Kueue objects);
- `identities`: each notebook user's own service account and its RoleBinding;
- `metadata`: the labels that mark an object as ours, and `ProvisioningError`;
- `network`: NetworkPolicies and the API server's CIDRs;
- `kueue`: a queued tenant's ResourceFlavor, ClusterQueue and LocalQueue;
- `admission`: ValidatingAdmissionPolicies, one module per job kind and one of shared rules;
- `images`: the vetted-image policy for Dockerfiles; `scan_gate`: Trivy's verdict on an image;
- `runtimes`: the Paddle ClusterTrainingRuntime's restart copies;
- `apply`: server-side apply of rendered objects, with an opt-in prune.

Job kinds (`workbench_contract.jobkinds`) are read, never named: a new kind brings its own
admission module and the Role, quota and policies follow. Imports nothing of the hub's
processes (`hub_config.cli`, the spawners, auth, services).
"""
