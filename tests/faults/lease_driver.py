"""A service that only holds leases: ``python tests/faults/lease_driver.py URL HOLDER TTL
RENEW OFFICE...``.

It runs :meth:`bsc_rules.store.lease.Leases.run` with the given ttl and renew interval
and prints the offices it holds (a JSON object, office to epoch) after every change,
flushed; SIGTERM stops it cleanly (its leases released), SIGKILL leaves them to expire.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from typing import Any

from bsc_rules.store.lease import Change, Leases


def main(argv: list[str]) -> int:
    url, holder, ttl, renew, *offices = argv
    leases = Leases(url, holder, offices, ttl=float(ttl), renew_every=float(renew))
    stop = threading.Event()

    def on_term(signum: int, frame: Any) -> None:
        stop.set()

    def show(change: Change) -> None:
        print(json.dumps(leases.held(), sort_keys=True), flush=True)

    signal.signal(signal.SIGTERM, on_term)
    leases.run(stop, on_change=show)
    print(json.dumps({}), flush=True)  # released
    leases.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
