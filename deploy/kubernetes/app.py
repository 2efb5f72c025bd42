"""An example service that joins its cluster on Kubernetes.

Everything comes from the environment (see deployment.yaml): the node name
(``myapp@<pod IP>``), the cookie (a Secret), the strategy and its options. It
serves ``/ready`` on port 8080 for the readiness probe: ready once the node
listens, so that its address is published only when peers can link to it.
"""

from __future__ import annotations

import asyncio
import logging
import os

import skycluster


async def health(cluster: skycluster.Cluster) -> asyncio.Server:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            ok = cluster.running
            body = f"{'ready' if ok else 'starting'} {len(cluster.nodes())} peers\n".encode()
            status = b"200 OK" if ok else b"503 Service Unavailable"
            writer.write(
                b"HTTP/1.1 "
                + status
                + b"\r\nContent-Type: text/plain\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, "0.0.0.0", int(os.environ.get("HEALTH_PORT", "8080")))


async def main() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO"))
    async with skycluster.Cluster.from_env() as cluster:
        server = await health(cluster)
        async with server:
            async for event in cluster.subscribe():
                logging.info("%s; members now: %s", event, cluster.nodes())


if __name__ == "__main__":
    asyncio.run(main())
