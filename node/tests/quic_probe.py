"""A third-party QUIC client (aioquic) probing a cairn site.

Usage: quic_probe.py HOST PORT [CERT KEY]

Connects with ALPN cairn/1 (server certificate not verified), optionally presenting a
client certificate, sends one `Status` request frame and waits for an answer.
Prints "answered N bytes" and exits 0 if the site answered; prints "refused: ..." and
exits 1 otherwise.
"""

import asyncio
import ssl
import sys

from aioquic.asyncio import connect
from aioquic.quic.configuration import QuicConfiguration

# Frame: version 1, u32 BE length 2, then the codec's version byte 1 and the
# bincode variant index 0 (Request::Status).
STATUS_REQUEST = bytes([1, 0, 0, 0, 2, 1, 0])


async def probe(host, port, cert, key):
    config = QuicConfiguration(is_client=True, alpn_protocols=["cairn/1"])
    config.verify_mode = ssl.CERT_NONE
    config.server_name = "cairn"
    if cert:
        config.load_cert_chain(cert, key)
    async with connect(host, port, configuration=config) as client:
        reader, writer = await client.create_stream()
        writer.write(STATUS_REQUEST)
        writer.write_eof()
        answer = await reader.read()
        if not answer:
            raise ConnectionError("stream closed without an answer")
        return answer


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    cert, key = (sys.argv[3], sys.argv[4]) if len(sys.argv) > 4 else (None, None)
    try:
        answer = asyncio.run(asyncio.wait_for(probe(host, port, cert, key), 5))
    except Exception as error:  # any failure means no answer
        print(f"refused: {type(error).__name__}: {error}")
        sys.exit(1)
    print(f"answered {len(answer)} bytes")


if __name__ == "__main__":
    main()
