"""The learner's former module: its names now live in the package `policy_store.learner`.

Kept only for the policy store service until it imports the package; nothing else uses it."""

from policy_store.learner import Budget, PolicyError, RoleRL, RoleRLParams, reward

__all__ = ["Budget", "PolicyError", "RoleRL", "RoleRLParams", "reward"]
