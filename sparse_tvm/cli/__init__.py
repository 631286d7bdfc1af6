"""The ``sparse-tvm`` command line."""
