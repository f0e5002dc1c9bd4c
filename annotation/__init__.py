"""The human instrument: rubrics, rounds, comparison tasks, leases, judgments and exports."""
