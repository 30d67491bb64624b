// TCP keepalive on the plain sockets the proxy accepts and dials: a pod's app, a SOCKS5 client, a
// captured connection, a destination outside the mesh. An idle relay whose peer vanished (a node
// gone, a NAT entry dropped) is found and closed instead of holding its sockets forever, and an app
// that relies on keepalive still has it on its leg to the proxy, since keepalive does not cross a
// relay. HBONE connections have HTTP/2 PINGs instead.
import type { ServerOpts, Socket } from "node:net";

/** Idle time before the first probe: ztunnel's `KEEPALIVE_TIME` (180 s). */
export const TCP_KEEPALIVE_IDLE_MS = 180_000;

/** `net.createServer` options that turn keepalive on for every accepted socket. */
export const KEEPALIVE_SERVER_OPTIONS: Readonly<Pick<ServerOpts, "keepAlive" | "keepAliveInitialDelay">> =
  Object.freeze({ keepAlive: true, keepAliveInitialDelay: TCP_KEEPALIVE_IDLE_MS });

/** Turns keepalive on for a socket the proxy dials (applied once it connects); returns it. */
export function withKeepAlive<S extends Socket>(socket: S): S {
  socket.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
  return socket;
}
