#!/usr/bin/python3
"""pyhl7_server.py PORT - the peer for the daemon benchmark: python3-hl7's
asyncio MLLP server that parses each message and answers its ACK (no rules,
no storage), which is the least a Python gate would do."""
import asyncio
import sys

import hl7.mllp


async def handle(reader, writer):
    try:
        while True:
            msg = await reader.readmessage()
            writer.writemessage(msg.create_ack())
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass
    finally:
        writer.close()


async def main(port):
    server = await hl7.mllp.start_hl7_server(handle, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
