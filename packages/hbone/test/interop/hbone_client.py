"""A minimal HBONE client on python3-h2 and the ssl module, used to check interop.

Usage: hbone_client.py HOST PORT CERT KEY CA EXPECTED_SAN MODE [ARGS...]
Modes:
  echo AUTHORITY SIZE      CONNECT, send SIZE bytes then END_STREAM, read the reply until END_STREAM
  status AUTHORITY         CONNECT and report the response status
  flood AUTHORITY COUNT    open COUNT CONNECT streams at once, ignoring the peer's stream limit
  bigheader AUTHORITY SIZE CONNECT with one header of SIZE bytes, then a normal CONNECT on the same connection
  settings                 report the server's SETTINGS and connection window
Prints one JSON object on stdout.
"""

import json
import socket
import ssl
import sys

import h2.config
import h2.connection
import h2.events
import h2.settings


def uri_sans(cert):
    return [v for (k, v) in cert.get("subjectAltName", ()) if k == "URI"]


def main():
    host, port, cert, key, ca, expected, mode = sys.argv[1:8]
    args = sys.argv[8:]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.check_hostname = False  # HBONE checks the URI SAN, not a hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, key)
    ctx.set_alpn_protocols(["h2"])
    raw = socket.create_connection((host, int(port)), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=None)  # no SNI
    result = {"alpn": tls.selected_alpn_protocol(), "version": tls.version()}
    peer = uri_sans(tls.getpeercert())
    result["peerSans"] = peer
    if peer != [expected]:
        result["error"] = "unexpected peer identity"
        print(json.dumps(result))
        return

    # h2 4.x validates every request as if it needed :scheme and :path; classic CONNECT has neither.
    config = h2.config.H2Configuration(client_side=True, validate_outbound_headers=False)
    conn = h2.connection.H2Connection(config=config)
    conn.initiate_connection()
    conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    tls.sendall(conn.data_to_send())

    def pump(until):
        while not until():
            data = tls.recv(65536)
            if not data:
                result["closed"] = True
                return
            for ev in conn.receive_data(data):
                handle(ev)
            out = conn.data_to_send()
            if out:
                tls.sendall(out)

    streams = {}

    def handle(ev):
        sid = getattr(ev, "stream_id", None)
        st = streams.get(sid)
        if isinstance(ev, h2.events.ResponseReceived) and st is not None:
            st["status"] = int(dict(ev.headers)[b":status"])
            st["headers"] = {k.decode(): v.decode() for k, v in ev.headers}
        elif isinstance(ev, h2.events.DataReceived) and st is not None:
            st["body"] += ev.data
            conn.acknowledge_received_data(ev.flow_controlled_length, sid)
        elif isinstance(ev, h2.events.StreamEnded) and st is not None:
            st["ended"] = True
        elif isinstance(ev, h2.events.StreamReset) and st is not None:
            st["reset"] = int(ev.error_code)
            st["ended"] = True
        elif isinstance(ev, h2.events.WindowUpdated):
            if ev.stream_id == 0:
                result["connectionWindowUpdated"] = True
        elif isinstance(ev, h2.events.RemoteSettingsChanged):
            result["gotSettings"] = True
        elif isinstance(ev, h2.events.ConnectionTerminated):
            result["goaway"] = int(ev.error_code)

    def connect(authority, extra=()):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, [(":method", "CONNECT"), (":authority", authority), *extra])
        streams[sid] = {"status": None, "body": b"", "ended": False}
        tls.sendall(conn.data_to_send())
        return sid

    def send_all(sid, payload):
        offset = 0
        while offset < len(payload):
            window = min(conn.local_flow_control_window(sid), conn.max_outbound_frame_size)
            if window <= 0:
                before = conn.local_flow_control_window(sid)
                pump(lambda: conn.local_flow_control_window(sid) > before or result.get("closed"))
                continue
            chunk = payload[offset : offset + window]
            conn.send_data(sid, chunk)
            offset += len(chunk)
            tls.sendall(conn.data_to_send())

    if mode == "echo":
        authority, size = args[0], int(args[1])
        sid = connect(authority, [("baggage", "k8s.namespace.name=interop"), ("forwarded", 'for="10.9.9.9:999"')])
        pump(lambda: streams[sid]["status"] is not None or streams[sid]["ended"])
        payload = bytes((i % 251 for i in range(size)))
        send_all(sid, payload)
        conn.end_stream(sid)
        tls.sendall(conn.data_to_send())
        pump(lambda: streams[sid]["ended"])
        st = streams[sid]
        result.update(status=st["status"], received=len(st["body"]), headers=st.get("headers"))
        result["bodyOk"] = st["body"] == b"echo:" + payload
    elif mode == "status":
        sid = connect(args[0])
        pump(lambda: streams[sid]["status"] is not None or streams[sid]["ended"])
        result["status"] = streams[sid]["status"]
        result["reset"] = streams[sid].get("reset")
    elif mode == "flood":
        authority, count = args[0], int(args[1])
        # Pretend the peer allowed unlimited streams, as a misbehaving client would.
        conn.remote_settings = h2.settings.Settings(client=False, initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 1 << 30})
        ids = [connect(authority) for _ in range(count)]
        pump(lambda: all(streams[i]["status"] is not None or streams[i]["ended"] for i in ids) or result.get("goaway") is not None)
        result["statuses"] = [streams[i]["status"] for i in ids]
        result["resets"] = [streams[i].get("reset") for i in ids]
    elif mode == "settings":
        pump(lambda: result.get("gotSettings") and result.get("connectionWindowUpdated"))
        rs = conn.remote_settings
        result["settings"] = {
            "initialWindowSize": rs.initial_window_size,
            "maxFrameSize": rs.max_frame_size,
            "maxConcurrentStreams": rs.max_concurrent_streams,
            "maxHeaderListSize": rs.max_header_list_size,
            "enablePush": rs.enable_push,
        }
        result["connectionWindow"] = conn.outbound_flow_control_window
    elif mode == "bigheader":
        authority, size = args[0], int(args[1])
        big = connect(authority, [("x-big", "a" * size)])
        pump(lambda: streams[big]["status"] is not None or streams[big]["ended"] or result.get("goaway") is not None)
        result["bigStatus"] = streams[big]["status"]
        result["bigReset"] = streams[big].get("reset")
        if result.get("goaway") is None and not result.get("closed"):
            sid = connect(authority)
            pump(lambda: streams[sid]["status"] is not None or streams[sid]["ended"])
            result["afterStatus"] = streams[sid]["status"]
    print(json.dumps(result))
    try:
        conn.close_connection()
        tls.sendall(conn.data_to_send())
        tls.close()
    except OSError:
        pass


if __name__ == "__main__":
    main()
