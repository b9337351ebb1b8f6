"""External pools (Parquet folders) and their scoring on a Dask cluster (issue 18)."""
