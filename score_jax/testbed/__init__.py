"""The laptop testbed: multi-step addition, a base model made here, SCoRe vs naive RL in minutes."""
