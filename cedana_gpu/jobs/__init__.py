"""Jobs: the job store, the state directory, and starting a job."""
