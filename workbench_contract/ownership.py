"""What belongs to one user in a tenant's namespace, by name.

The hub's admission policies (`hub_config.cluster_policy.admission`) let a user's jobs mount only
their own claim and read only their own Secrets; the cluster engine names the Secrets it makes so
that they pass. Both sides read the rule here.
"""

# KubeSpawner's (and Zero to JupyterHub's) default claim of a user's default server is
# `claim-{username}`: the only claim a job of that user may mount.
CLAIM_PREFIX = "claim-"
# A user's Secrets are named `<user>.<anything>`: user names (KubeSpawner's `{username}`) have no
# dot, so no user's prefix is another's.
SECRET_SEPARATOR = "."


def user_claim(user: str) -> str:
    """The claim of `user`'s default server."""
    return f"{CLAIM_PREFIX}{user}"


def user_secret(user: str, name: str) -> str:
    """A Secret of `user`'s, as the admission policies recognise it."""
    return f"{user}{SECRET_SEPARATOR}{name}"
