#!/usr/bin/env python3
"""delay_proxy.py LISTEN_HOST LISTEN_PORT TARGET_HOST TARGET_PORT DELAY_MS

A TCP proxy that holds every byte DELAY_MS before passing it on, in both
directions: net.sh's stand-in for `tc netem delay` on kernels built without
sch_netem. Each request/response exchange through it pays 2 x DELAY_MS of
round trip, which is what limits a fixed number of range requests in flight;
unlike netem it does not stretch the TCP handshake or slow start of the link
behind it (the proxy terminates TCP on both sides). Stops when killed.
"""
import asyncio
import sys
import time


async def pump(reader, writer, delay):
    q = asyncio.Queue()

    async def sender():
        while True:
            due, data = await q.get()
            if data is None:
                break
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            writer.write(data)
            await writer.drain()
        try:
            writer.write_eof()
        except (OSError, RuntimeError):
            pass

    task = asyncio.ensure_future(sender())
    try:
        while True:
            data = await reader.read(1 << 16)
            await q.put((time.monotonic() + delay, data or None))
            if not data:
                break
    except (OSError, asyncio.IncompleteReadError):
        await q.put((0, None))
    try:
        await task
    except OSError:
        pass


async def main():
    lhost, lport, thost, tport, delay_ms = sys.argv[1:6]
    delay = int(delay_ms) / 1000.0

    async def handle(cr, cw):
        try:
            sr, sw = await asyncio.open_connection(thost, int(tport))
        except OSError:
            cw.close()
            return
        await asyncio.gather(pump(cr, sw, delay), pump(sr, cw, delay), return_exceptions=True)
        cw.close()
        sw.close()

    server = await asyncio.start_server(handle, lhost, int(lport))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
