"""A minimal HBONE server on python3-h2 and the ssl module, used to check interop.

Usage: hbone_server.py CERT KEY CA
Listens on 127.0.0.1 (ephemeral port, printed as {"port": N} on the first stdout line), accepts one
mTLS connection (client certificate required), answers each CONNECT with 200 and echoes the stream's
bytes back prefixed with "echo:" once the client half-closes; refuses authority "deny:1" with 401.
After the connection closes, prints one JSON line describing what it saw.
"""

import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events
import h2.exceptions


def main():
    cert, key, ca = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    sni = []
    ctx.sni_callback = lambda sock, name, c: sni.append(name)
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    print(json.dumps({"port": lsock.getsockname()[1]}), flush=True)
    lsock.settimeout(20)
    raw, _ = lsock.accept()
    raw.settimeout(20)
    tls = ctx.wrap_socket(raw, server_side=True)
    seen = {
        "alpn": tls.selected_alpn_protocol(),
        "version": tls.version(),
        "sni": sni,
        "peerSans": [v for (k, v) in tls.getpeercert().get("subjectAltName", ()) if k == "URI"],
        "streams": [],
    }
    # h2 4.x validates every request as if it needed :scheme and :path; classic CONNECT has neither.
    config = h2.config.H2Configuration(client_side=False, validate_inbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    tls.sendall(conn.data_to_send())
    bodies = {}
    pending = {}

    def flush_pending(sid):
        data = pending.get(sid)
        while data:
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                return
            conn.send_data(sid, data[:window])
            data = data[window:]
            pending[sid] = data
        if sid in pending:
            del pending[sid]
            conn.end_stream(sid)

    terminated = False
    while True:
        try:
            data = tls.recv(65536)
        except (ConnectionResetError, ssl.SSLError):
            break
        if not data:
            break
        try:
            events = conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # After the peer's GOAWAY, h2 treats any further frame (Node 22 may still send RST_STREAM
            # for a stream it is tearing down) as an error; RFC 9113 lets it be ignored. Stop reading.
            if terminated:
                break
            raise
        for ev in events:
            if isinstance(ev, h2.events.RequestReceived):
                if "clientSettings" not in seen:
                    rs = conn.remote_settings
                    seen["clientSettings"] = {
                        "initialWindowSize": rs.initial_window_size,
                        "maxFrameSize": rs.max_frame_size,
                        "maxHeaderListSize": rs.max_header_list_size,
                        "enablePush": rs.enable_push,
                    }
                    seen["connectionWindow"] = conn.outbound_flow_control_window
                headers = {k.decode(): v.decode() for k, v in ev.headers}
                seen["streams"].append(headers)
                if headers.get(":method") != "CONNECT":
                    conn.send_headers(ev.stream_id, [(":status", "400")], end_stream=True)
                elif headers.get(":authority") == "deny:1":
                    conn.send_headers(ev.stream_id, [(":status", "401")], end_stream=True)
                else:
                    conn.send_headers(ev.stream_id, [(":status", "200"), ("baggage", "k8s.namespace.name=pyserver")])
                    bodies[ev.stream_id] = b""
            elif isinstance(ev, h2.events.DataReceived):
                bodies[ev.stream_id] = bodies.get(ev.stream_id, b"") + ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                if ev.stream_id in bodies:
                    pending[ev.stream_id] = b"echo:" + bodies.pop(ev.stream_id)
                    flush_pending(ev.stream_id)
            elif isinstance(ev, h2.events.WindowUpdated):
                for sid in list(pending):
                    flush_pending(sid)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                terminated = True
        out = conn.data_to_send()
        if out:
            tls.sendall(out)
    print(json.dumps(seen), flush=True)


if __name__ == "__main__":
    main()
