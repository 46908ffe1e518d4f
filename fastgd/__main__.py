"""``python -m fastgd``: the ``fastgd`` command.

Under MPI: ``mpiexec -n 2 python -m mpi4py -m fastgd train``.
"""

import sys

from fastgd.cli import main

sys.exit(main())
