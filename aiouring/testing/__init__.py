"""Test doubles for code built on aiouring: no root, no io_uring.

``FakeRing`` is the production ``Ring`` (its batching, flush, reap, dispatch,
cancellation and close) over ``FakeKernel``, which answers in the kernel's
language: CQEs with ``-errno`` results, ``IORING_CQE_F_MORE`` on multishot
reads, ``-ENOBUFS`` when a buffer group runs dry, cancel results ``0``,
``-ENOENT`` or ``-EALREADY``, write batches that report only their failures
and their end, and (for a TUN with offloads) virtio headers checked as the
kernel checks them.  Completions are posted to a fake CQ and a real eventfd
is signalled, so the loop wakes the ring exactly as the kernel would.

A test drives it in three ways:

* through the transports, built by the public factories on a fake device:
  ``fake_tun()`` gives an awaitable ``Tun`` and its ``FakePeer``;
  ``fake_tun_connection(protocol_factory)`` your Transport/Protocol code
  and the peer; ``fake_datagram_endpoint()`` a UDP endpoint.  The pytest
  plugin offers them as fixtures.
* scripted: ``ring.pending()`` lists the ops the fake kernel holds;
  ``ring.complete(op, data=...)`` and ``ring.fail(op, errno)`` post their
  CQEs (in any order, several before the loop runs to make one batch);
  ``ring.cancel_policy`` decides what an ``ASYNC_CANCEL`` does.
* as a device: ``ring.add_device(fd)`` makes an fd behave like a TUN or a
  datagram socket: packets given to ``device.inject()`` complete the armed
  read (or wait for one), writes complete at once and are collected in
  ``device.written`` (``device.sent`` for datagrams, with addresses).
"""
from ._fakes import FakePeer, FakeRing, FakeTun, FakeTunConnector, FakeTunDevice, fake_datagram_endpoint, fake_device, fake_tun, fake_tun_connection
from ._kernel import FakeDevice, FakeKernel, FakeOp, UseAfterFree

__all__ = [
    "FakeDevice",
    "FakeKernel",
    "FakeOp",
    "FakePeer",
    "FakeRing",
    "FakeTun",
    "FakeTunConnector",
    "FakeTunDevice",
    "UseAfterFree",
    "fake_datagram_endpoint",
    "fake_device",
    "fake_tun",
    "fake_tun_connection",
]
