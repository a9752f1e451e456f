"""A child of fork() that closes the rings it inherited (or lets them be
collected) must not touch the parent's: no cancels on the shared io_uring,
no unregistered buffer rings or eventfd, no remove_reader on the loop's
shared epoll.  The parent keeps receiving afterwards."""
from __future__ import annotations

import gc
import os
import socket

import aiouring
from support.udp import Recorder
from support.wait import wait_for_condition
from aiouring import Backend


async def test_a_child_closing_the_inherited_ring_leaves_the_parent_receiving(backend: Backend) -> None:
    transport, protocol = await aiouring.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0), backend=backend)
    ring = transport.get_extra_info("ring")
    address = transport.get_extra_info("sockname")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as tx:
        tx.sendto(b"before", address)
        await wait_for_condition(lambda: protocol.datagrams)
        pid = os.fork()
        if pid == 0:  # the child: close what it inherited, collect, leave
            status = 1
            try:
                ring.close()
                assert ring.closed
                gc.collect()
                status = 0
            finally:
                os._exit(status)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert not ring.closed
        for i in range(20):
            tx.sendto(b"after %d" % i, address)
        await wait_for_condition(lambda: len(protocol.datagrams) >= 21)
    assert [d for d, _ in protocol.datagrams] == [b"before"] + [b"after %d" % i for i in range(20)]
    assert protocol.errors == []
    transport.sendto(b"and sending", address)  # to itself
    await wait_for_condition(lambda: len(protocol.datagrams) >= 22)
    transport.close()
    assert await protocol.lost is None
