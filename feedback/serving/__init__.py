"""Model serving: the generation backends, the model registry, policy versions and their
deployment, the tiny offline model and its synthetic task (the rule oracle)."""
