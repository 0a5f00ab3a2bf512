"""The run dir: its file names and job dirs, the run lock, atomic files, provenance and sweeps."""
