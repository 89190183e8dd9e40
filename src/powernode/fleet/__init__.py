"""Fleet scale: the scaled deployment on one host and the fleet simulator (issue 19)."""
