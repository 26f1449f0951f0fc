#!/usr/bin/env python3
"""A relay for the interop matrix: NTP (UDP 123) and NTS-KE (TCP 4460) on
LISTEN are forwarded to TARGET, and the answers back. With --tamper, every
NTS time reply (its last extension field the NTS Authenticator) has its
last byte flipped, inside the authenticator's ciphertext, and the relay
prints "tampered" for each: an NTS client must refuse those replies.
It runs in the test's own network namespace, started and stopped by pid."""

import selectors
import socket
import sys
import threading

NTP, KE = 123, 4460


def pump(source, sink):
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    for s in (source, sink):
        try:
            s.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def serve_ke(server, target):
    while True:
        client, _ = server.accept()
        try:
            upstream = socket.create_connection((target, KE), timeout=5)
        except OSError:
            client.close()
            continue
        upstream.settimeout(None)
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def is_nts_reply(data):
    """A time reply with extension fields whose last is the NTS
    Authenticator (type 0x0404): its last byte is inside the ciphertext.
    An NTS NAK (stratum 0, only the unique identifier) is left alone."""
    if len(data) <= 48 or data[1] == 0:
        return False
    offset = 48
    last = None
    while offset + 4 <= len(data):
        field_type = int.from_bytes(data[offset:offset + 2], "big")
        length = int.from_bytes(data[offset + 2:offset + 4], "big")
        if length < 4:
            return False
        last = field_type
        offset += length
    return last == 0x0404


def serve_ntp(front, target, tamper):
    selector = selectors.DefaultSelector()
    selector.register(front, selectors.EVENT_READ, None)
    backs = {}  # client address -> its own socket towards the target
    while True:
        for key, _ in selector.select():
            # A datagram lost (an ICMP error from a server not up yet, a
            # client gone) is what UDP may do: logged, never the relay's end.
            try:
                if key.data is None:
                    data, client = front.recvfrom(65536)
                    back = backs.get(client)
                    if back is None:
                        back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        back.connect((target, NTP))
                        backs[client] = back
                        selector.register(back, selectors.EVENT_READ, client)
                    back.send(data)
                else:
                    data = key.fileobj.recv(65536)
                    if tamper and is_nts_reply(data):
                        data = data[:-1] + bytes([data[-1] ^ 0x01])
                        print("tampered", len(data), flush=True)
                    front.sendto(data, key.data)
            except OSError as error:
                print("lost a datagram:", error, flush=True)


def main():
    listen, target = sys.argv[1], sys.argv[2]
    tamper = "--tamper" in sys.argv[3:]
    ke = socket.create_server((listen, KE))
    front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    front.bind((listen, NTP))
    threading.Thread(target=serve_ke, args=(ke, target), daemon=True).start()
    print(f"relaying {listen} -> {target}" + (" (tampering)" if tamper else ""), flush=True)
    serve_ntp(front, target, tamper)


if __name__ == "__main__":
    main()
