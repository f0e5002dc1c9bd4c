"""One trainer per method, each readable top to bottom and driven by a documented recipe."""
