"""``python -m tnattn.bench``: same as ``tnattn bench``."""

import sys

from tnattn.bench.run import main

sys.exit(main())
