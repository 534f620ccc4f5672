"""`rmm-collector` with the collector's garbage collection tuned, to measure that proposal.

Not part of the product: the benchmark runs this instead of `rmm-collector` for its "proposed GC
setting" rows. Full (generation 2) collections over the token cache and the heartbeat buffer
stall the event loop for 100-400 ms under load; much higher thresholds make them rare.
"""

from __future__ import annotations

import gc
import sys

from collector.cli import main

THRESHOLDS = (100_000, 50, 1000)

if __name__ == "__main__":
    gc.set_threshold(*THRESHOLDS)
    sys.exit(main(sys.argv[1:]))
