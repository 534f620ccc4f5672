import sys

from collector.console import main

sys.exit(main())
