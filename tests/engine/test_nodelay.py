"""cnnviz.nodelay: connections accepted on a listening socket opened the way Streamlit opens it (protocol number 0)
get TCP_NODELAY, which asyncio alone does not give them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket

from cnnviz import nodelay


def accepted_nodelay() -> int:
    """TCP_NODELAY of the server side of one connection to a listener made like Streamlit's."""

    async def main() -> int:
        listener = socket.socket(family=socket.AF_INET)  # proto 0, as streamlit/web/server/starlette does
        listener.bind(("127.0.0.1", 0))
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport) -> None:
                sock = transport.get_extra_info("socket")
                accepted.set_result(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=listener)
        _, writer = await asyncio.open_connection(*listener.getsockname())
        value = await asyncio.wait_for(accepted, 10)
        writer.close()
        server.close()
        await server.wait_closed()
        return value

    with concurrent.futures.ThreadPoolExecutor(1) as pool:  # a loop of its own: Playwright may run one here
        return pool.submit(asyncio.run, main()).result()


def test_streamlit_like_listener_gets_nodelay_only_with_enable():
    if not nodelay._done["enabled"]:  # asyncio alone leaves Nagle on: what made messages wait for delayed ACKs
        assert accepted_nodelay() == 0
    nodelay.enable()
    nodelay.enable()  # idempotent
    assert accepted_nodelay() != 0


def test_set_nodelay_leaves_other_sockets_alone():
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        assert nodelay.set_nodelay(udp) is False
    finally:
        udp.close()
    assert nodelay.set_nodelay(object()) is False
