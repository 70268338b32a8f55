"""The cluster engine: a job is an object of one job kind (a PaddleJob, a TrainJob) in the tenant's
namespace, submitted and followed with the notebook's own credentials.

`engine.ClusterEngine` owns the mechanism every kind shares; each kind's adapter (`paddlejob`,
`trainjob`, any kind registered in `workbench_contract.jobkinds`) says only what differs. The pure
parts (`objects`, `quota`, the adapters' builders and status mappings, `kueue`'s queue messages)
are apart from the API I/O (`api`, `reader`, `informer`, `namespace_cache`, `logs`).
"""

from launcher_magic.engines.cluster.engine import ClusterEngine

__all__ = ["ClusterEngine"]
