"""Tasks: each builds its model and data from config, trains one step and evaluates."""
