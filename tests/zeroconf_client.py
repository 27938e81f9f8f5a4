"""Home Assistant's discovery of piperd's Wyoming port, with the `zeroconf`
package Home Assistant itself uses.

Run by tests/zeroconf.rs inside a network namespace of its own (`unshare
-n`), where loopback is the only interface: the mDNS packets never leave it.
Starts piperd there, browses `_wyoming._tcp.local.`, asks the announced
address for `describe` with the `wyoming` package, stops piperd with SIGTERM
and watches the announcement being withdrawn. Prints one JSON object.

    python zeroconf_client.py PIPERD VOICES_DIR NAME
"""

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

from wyoming.client import AsyncTcpClient
from wyoming.info import Describe, Info
from zeroconf import ServiceBrowser, ServiceListener, Zeroconf

SERVICE = "_wyoming._tcp.local."


class Listener(ServiceListener):
    def __init__(self):
        self.found = {}
        self.removed = []

    def add_service(self, zc, type_, name):
        info = zc.get_service_info(type_, name, timeout=3000)
        if info is not None:
            self.found[name] = (info.parsed_addresses(), info.port)

    def update_service(self, zc, type_, name):
        pass

    def remove_service(self, zc, type_, name):
        self.removed.append(name)


def wait_for(check, seconds):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.05)
    return False


async def describe(host, port):
    async with AsyncTcpClient(host, port) as client:
        await client.write_event(Describe().event())
        while True:
            event = await asyncio.wait_for(client.read_event(), 5)
            if Info.is_type(event.type):
                return Info.from_event(event)


def main():
    piperd, voices, name = sys.argv[1:4]
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "set", "lo", "multicast", "on"], check=True)
    env = dict(
        os.environ,
        PIPER_VOICES_DIR=voices,
        PIPER_PORT="5050",
        PIPER_WYOMING_PORT="10200",
        PIPER_WYOMING_ZEROCONF=name,
    )
    server = subprocess.Popen([piperd], env=env, stderr=subprocess.PIPE, text=True)
    result = {}
    zc = Zeroconf(interfaces=["127.0.0.1"])
    try:
        listener = Listener()
        ServiceBrowser(zc, SERVICE, listener)
        result["found"] = wait_for(lambda: listener.found, 15)
        result["services"] = {k: list(v) for k, v in listener.found.items()}
        for addresses, port in listener.found.values():
            info = asyncio.run(describe(addresses[0], port))
            result["programs"] = [p.name for p in info.tts]
        server.send_signal(signal.SIGTERM)
        result["exit_code"] = server.wait(timeout=30)
        result["withdrawn"] = wait_for(lambda: listener.removed, 5)
        result["removed"] = listener.removed
    finally:
        zc.close()
        if server.poll() is None:
            server.kill()
            server.wait()
        result["log"] = server.stderr.read()[-3000:]
    print(json.dumps(result))


if __name__ == "__main__":
    main()
