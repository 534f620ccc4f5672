"""`rmm-fleetsim`: a fleet of virtual agents speaking the real wire format to real collectors.

It enrolls agents (over HTTP, or in bulk straight into the collector's state for large set-ups),
heartbeats them at a set rate, can request offboards and answers the signed commands it is handed,
and reports the rate it reached, latency percentiles, errors, and whether the collector lost any
agent's last acknowledged heartbeat.
"""
