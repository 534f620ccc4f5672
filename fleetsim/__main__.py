import sys

from fleetsim.console import main

sys.exit(main())
