"""The policy store: the Role-RL learner (`role_rl`), routing policies (`policies`) and its service."""
