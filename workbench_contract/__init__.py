"""The contract between the hub and the notebook side of Paddle Workbench.

Everything both sides must agree on lives here and nowhere else: the environment a spawner gives a
notebook server and the typed record it stands for (`environment`), the labels on every pod
(`labels`), the security contexts of every pod (`pod_security`), resource names and the
DNS-label and quantity rules (`resources`), the VisualDL board key (`visualdl`), what belongs to
one user by name (`ownership`), the cluster's APIs and their controllers' labels (`cluster`), the
kinds of cluster job with what each side needs of them (`jobkinds`), and the one NetworkPolicy
shape that joins a job's pods (`job_network`).

Standard library only, and it imports nothing else of the workbench: the hub (`hub_config`) and
the notebook side (`launcher_magic`, `extensions`) both import it, never each other.
"""
