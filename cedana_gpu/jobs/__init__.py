"""Jobs: the job store, the state directory, and the CLI's side of a job (``lifecycle``)."""
