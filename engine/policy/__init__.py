"""The policy language: load, validate, check and compile YAML routing policies (see `engine.policy.api`)."""
