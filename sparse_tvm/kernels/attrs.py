"""Function attributes the kernels carry for the passes after them."""

# A kernel scheduled by hand (or from tuning records): the dense schedule pipeline leaves it alone.
HAND_WRITTEN_ATTR = "sparse_tvm.hand_written"
