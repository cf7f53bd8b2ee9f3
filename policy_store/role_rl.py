"""The names the policy store service imports from the learner, until it imports the package
`policy_store.learner` itself; this module then goes."""

from policy_store.learner import Budget, PolicyError, RoleRL, RoleRLParams, reward

__all__ = ["Budget", "PolicyError", "RoleRL", "RoleRLParams", "reward"]
