"""Everything the hub runs with: tenants, login and spawn glue, policy, provisioning, culling, `workbench`."""
