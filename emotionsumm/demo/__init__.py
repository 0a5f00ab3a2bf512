"""Generators of the embedded demo data sets (deterministic, written on first use into `data.demo_dir`), so
every experiment runs without a download. The data objects read them with the same readers as real data."""
