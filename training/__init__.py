"""From judgments to models: dataset snapshots, training runs as jobs, one trainer per method."""
