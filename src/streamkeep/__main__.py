import sys

from streamkeep.cli import main

sys.exit(main())
