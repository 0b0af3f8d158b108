"""What a run leaves behind: the results table (results), the code version and machine that
made a row (provenance), the experiment logger (run_logger) and the figures (plots)."""
