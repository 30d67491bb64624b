/**
 * The client half of SOCKS5 CONNECT (RFC 1928, no authentication, IPv4 targets): what an app whose
 * traffic a ztunnel takes over SOCKS5 sends before its first byte. Used by the load generator and the
 * forwarding shim in front of iperf3.
 */
import { once } from "node:events";
import { connect, type Socket } from "node:net";

/** Where a connection through a SOCKS5 proxy goes. */
export interface Socks5Route {
  /** The proxy (`host`, `port`). */
  proxyHost: string;
  proxyPort: number;
  /** Source address: a ztunnel tells pods apart by it. */
  localAddress?: string;
  targetIp: string;
  targetPort: number;
}

/** Greeting (one method: no authentication) and CONNECT request for an IPv4 target, in one buffer. */
export function socks5ConnectBytes(targetIp: string, targetPort: number): Buffer {
  const octets = targetIp.split(".").map(Number);
  if (octets.length !== 4 || octets.some((o) => !Number.isInteger(o) || o < 0 || o > 255)) {
    throw new Error(`not an IPv4 address: ${targetIp}`);
  }
  return Buffer.from([5, 1, 0, 5, 1, 0, 1, ...octets, targetPort >> 8, targetPort & 0xff]);
}

/** Method selection (2 bytes) plus an IPv4 reply (10 bytes). */
const REPLY_BYTES = 12;

/**
 * Opens a connection through the proxy and resolves once it answered "succeeded"; bytes that came
 * after the reply are unshifted back onto the socket. Rejects on any other reply or a socket error.
 */
export async function socks5Connect(route: Socks5Route): Promise<Socket> {
  const socket = connect({
    host: route.proxyHost,
    port: route.proxyPort,
    ...(route.localAddress === undefined ? {} : { localAddress: route.localAddress }),
  });
  socket.setNoDelay(true);
  try {
    await once(socket, "connect");
    socket.write(socks5ConnectBytes(route.targetIp, route.targetPort));
    const buffered = await new Promise<Buffer>((resolve, reject) => {
      let got: Buffer = Buffer.alloc(0);
      const onData = (chunk: Buffer) => {
        got = got.length === 0 ? chunk : Buffer.concat([got, chunk]);
        if (got.length < REPLY_BYTES) return;
        done();
        resolve(got);
      };
      const onEnd = () => {
        done();
        reject(new Error(`SOCKS5 proxy closed after ${got.length} reply bytes`));
      };
      const onError = (err: Error) => {
        done();
        reject(err);
      };
      const done = () => {
        socket.pause();
        socket.off("data", onData).off("end", onEnd).off("error", onError);
      };
      socket.on("data", onData).on("end", onEnd).on("error", onError);
    });
    // [5, 0] method selection, then [5, REP, 0, ATYP=1, ip4, port].
    if (buffered[0] !== 5 || buffered[1] !== 0) {
      throw new Error(`SOCKS5 method refused: ${buffered.subarray(0, 2).toString("hex")}`);
    }
    if (buffered[2] !== 5 || buffered[3] !== 0 || buffered[5] !== 1) {
      throw new Error(`SOCKS5 reply ${buffered.subarray(2, 6).toString("hex")} (want 05 00 00 01)`);
    }
    const rest = buffered.subarray(REPLY_BYTES);
    if (rest.length > 0) socket.unshift(rest);
    return socket;
  } catch (err) {
    socket.destroy();
    throw err;
  }
}
