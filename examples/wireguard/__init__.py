"""A WireGuard peer on aiouring (issue 14): the protocol of the WireGuard
whitepaper, interoperable with wireguard-go and the kernel's WireGuard.

    python examples/wireguard wg0.conf --interface wg0

Modules, one job each:

* ``crypto``     the primitives (BLAKE2s, HMAC/HKDF, X25519, ChaCha20-Poly1305, XChaCha20-Poly1305, TAI64N)
* ``constants``  the protocol's constants, and the environment variables that shorten the timers for tests
* ``noise``      the Noise_IKpsk2 handshake, mac1/mac2 and cookies, sans I/O
* ``replay``     the sliding replay window of a receiving key
* ``allowedips`` cryptokey routing: longest-prefix match, IPv4 and IPv6
* ``device``     peers, keypairs, the data path and the timers, sans I/O
* ``config``     wg / wg-quick configuration files
* ``net``        routes, default-route policy rules and hooks, as wg-quick does them
* ``uapi``       the socket ``wg show`` reads
* ``cli``        the program: the aiouring TUN transport and UDP endpoint around a device
"""
