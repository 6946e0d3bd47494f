import sys

from benchforge.cli import main

sys.exit(main())
