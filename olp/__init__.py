"""OLP + Role-RL: plumbing shared by the processors and the policy store (settings, topics,
model catalog, embedded dev stack, feed readers) and the `olp` command line."""

__version__ = "0.1.0"
