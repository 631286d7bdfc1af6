import sys

from sparse_tvm.cli.main import main

sys.exit(main())
