"""A TCP proxy in its own process: ``python tests/tcp_proxy.py HOST PORT [DELAY_MS]``.

Listens on a free loopback port (printed as ``ready <port>``) and forwards every
connection to HOST:PORT.  Tests SIGSTOP it to make a database stop answering without
touching the database server itself, and SIGCONT it to bring it back.  With DELAY_MS,
what HOST:PORT sends arrives that much later (in order): a server far away.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


async def _delayed_pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay_s: float
) -> None:
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()

    async def deliver() -> None:
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                await asyncio.sleep(due - loop.time())
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    delivering = asyncio.create_task(deliver())
    try:
        while data := await reader.read(65536):
            queue.put_nowait((loop.time() + delay_s, data))
    except (ConnectionError, OSError):
        pass
    finally:
        queue.put_nowait(None)
        await delivering


async def main(host: str, port: int, delay_ms: int = 0) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(host, port)
        except OSError:
            writer.close()
            return
        back = (
            _delayed_pipe(up_reader, writer, delay_ms / 1000)
            if delay_ms
            else _pipe(up_reader, writer)
        )
        await asyncio.gather(_pipe(reader, up_writer), back)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    print("ready", server.sockets[0].getsockname()[1], flush=True)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def tcp_proxy(
    host: str, port: int, *, delay_ms: int = 0
) -> Iterator[tuple[int, subprocess.Popen[str]]]:
    """Start the proxy; yield ``(listen_port, process)``; always kill it afterwards."""
    proc = subprocess.Popen(
        [sys.executable, __file__, host, str(port), str(delay_ms)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().split()
        if len(line) != 2 or line[0] != "ready":
            raise RuntimeError("the TCP proxy did not start")
        yield int(line[1]), proc
    finally:
        proc.kill()
        proc.wait(10)
        if proc.stdout is not None:
            proc.stdout.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2]), *map(int, sys.argv[3:4])))
