"""Browse and resolve `_openwork._tcp.local.` with python-zeroconf, an
independent DNS-SD implementation, and print what it saw as one JSON object.

Usage: dnssd_browse.py SECONDS. Exits 2 when nothing was resolved in time.
"""

import json
import sys
import threading

from zeroconf import ServiceBrowser, ServiceListener, Zeroconf
from zeroconf._utils.name import service_type_name

SERVICE = "_openwork._tcp.local."


class Listener(ServiceListener):
    def __init__(self) -> None:
        self.found = threading.Event()
        self.name = None

    def add_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        self.name = name
        self.found.set()

    def update_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass

    def remove_service(self, zc: Zeroconf, type_: str, name: str) -> None:
        pass


def main() -> int:
    timeout = float(sys.argv[1])
    # Strict RFC 6763 §7 checks of the service type itself.
    service_type_name(SERVICE, strict=True)
    zc = Zeroconf()
    try:
        listener = Listener()
        ServiceBrowser(zc, SERVICE, listener)
        if not listener.found.wait(timeout):
            return 2
        info = zc.get_service_info(SERVICE, listener.name, timeout=int(timeout * 1000))
        if info is None:
            return 2
        # The raw TXT strings, as a DNS-SD client sees them (RFC 6763 §6).
        txt, raw, i = [], info.text or b"", 0
        while i < len(raw):
            n = raw[i]
            txt.append(raw[i + 1 : i + 1 + n].decode("utf-8"))
            i += 1 + n
        print(
            json.dumps(
                {
                    "fullname": info.name,
                    "instance": info.get_name(),
                    "server": info.server,
                    "port": info.port,
                    "addresses": info.parsed_addresses(),
                    "txt": txt,
                }
            )
        )
        return 0
    finally:
        zc.close()


if __name__ == "__main__":
    sys.exit(main())
