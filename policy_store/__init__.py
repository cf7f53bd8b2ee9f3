"""The policy store: the Role-RL learner (`learner`), routing policies (`policies`) and its service."""
