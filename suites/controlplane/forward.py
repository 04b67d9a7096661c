#!/usr/bin/env python3
"""The control plane's door for clients outside its network namespace (suites/controlplane/start.sh).

    forward.py NETNS_PATH PORT...

Binds one listening port on 127.0.0.1 per PORT in the namespace it starts in (the caller's), then
moves itself into the network namespace at NETNS_PATH (setns(2): the listening sockets stay where
they were bound; every socket made afterwards belongs to the new namespace) and connects each
accepted client to 127.0.0.1:PORT there. Prints the listening ports, space-separated, in the order
of the PORT arguments, on one line, then serves until killed.

So clients (the tests, helm, meshcheck) run in the caller's namespace, while the API server and
everything it dials (webhooks, service proxies, kubelets at addresses that exist nowhere) stay in
the control plane's, where nothing can leave the machine. Needs CAP_SYS_ADMIN (root) for setns.
"""

import ctypes
import os
import socket
import sys
import threading

CLONE_NEWNET = 0x40000000


def pump(src, dst):
    """Copies src to dst until either side ends, then shuts both down (the other pump ends too)."""
    try:
        while data := src.recv(65536):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def serve(listener, port):
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection(("127.0.0.1", port))
        except OSError:
            client.close()
            continue
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=pump, args=(a, b), daemon=True).start()


def main():
    netns, targets = sys.argv[1], [int(p) for p in sys.argv[2:]]
    listeners = []
    for _ in targets:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        s.listen(128)
        listeners.append(s)
    fd = os.open(netns, os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns {netns}: {os.strerror(err)}")
    os.close(fd)
    print(" ".join(str(s.getsockname()[1]) for s in listeners), flush=True)
    for listener, port in zip(listeners, targets):
        threading.Thread(target=serve, args=(listener, port), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
