"""The job model every part of the notebook side reads: spec, status, job directory, node command,
process groups. It runs wherever a job is touched: the kernel, the local supervisor, each rank."""
