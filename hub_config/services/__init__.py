"""Hub services: processes the hub starts beside itself (per-tenant idle cullers, the GPU-idle
culler). They talk to the hub over its REST API with their own tokens; `idle_culler` builds their
service definitions for the hub's config."""
