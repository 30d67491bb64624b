/**
 * The upstream half of an HTTP/1.1 `Upgrade` (WebSocket). The request goes out as an ordinary HTTP
 * request on a connection of its own; only a `101 Switching Protocols` hands over the raw connection.
 * Any other answer is an ordinary response and the connection is closed after it.
 */
import http from "node:http";
import { type Duplex, finished, Readable } from "node:stream";
import { RouterError } from "./errors.js";
import { createHeaderMap } from "./header-filters.js";
import { fromNodeError } from "./node-error.js";
import {
  type ConnectUpstream,
  type Endpoint,
  endpointKey,
  isForwardedHeader,
  type SentRequest,
  UPSTREAM_MAX_RESPONSE_HEAD_BYTES,
  UpstreamAttemptError,
  type UpstreamRequest,
  type UpstreamResponse,
  whenConnected,
  withSocketMethods,
} from "./upstream.js";

/** An upstream answer to an upgrade request. */
export interface UpgradeResponse extends UpstreamResponse {
  /** Present on `101 Switching Protocols`: the raw connection and the bytes that followed the head. */
  switched?: { socket: Duplex; head: Buffer; upgrade: string };
}

function forwardable(raw: http.IncomingHttpHeaders): Record<string, string | string[]> {
  const out = createHeaderMap();
  for (const k in raw) {
    const v = raw[k];
    if (v !== undefined && isForwardedHeader(k)) out[k] = v;
  }
  return out;
}

/** Sends `request` with `Connection: Upgrade` and `Upgrade: <protocol>` to `endpoint`. */
export function sendUpgrade(
  connect: ConnectUpstream,
  endpoint: Endpoint,
  request: UpstreamRequest,
  protocol: string,
): SentRequest<UpgradeResponse> {
  let req: http.ClientRequest | undefined;
  let stream: Duplex | undefined;
  let localAddress: string | undefined;
  let aborted = false;
  const abort = () => {
    aborted = true;
    req?.destroy();
    stream?.destroy();
  };
  const response = (async (): Promise<UpgradeResponse> => {
    try {
      stream = await connect(endpoint);
    } catch (cause) {
      throw new UpstreamAttemptError(
        "connect-failure",
        new RouterError("ERR_UPSTREAM_CONNECT", `connect to ${endpointKey(endpoint)} failed`, { cause }),
      );
    }
    const socket = withSocketMethods(stream);
    if (aborted) {
      socket.destroy();
      throw new UpstreamAttemptError("reset", new RouterError("ERR_UPSTREAM_RESET", "attempt aborted"));
    }
    let connected = false;
    whenConnected(socket, (address) => {
      connected = true;
      localAddress = address;
    });
    const r = http.request({
      method: request.method,
      path: request.path,
      headers: { ...request.headers, host: request.authority, connection: "Upgrade", upgrade: protocol },
      setHost: false,
      createConnection: () => socket as never,
      maxHeaderSize: UPSTREAM_MAX_RESPONSE_HEAD_BYTES,
    });
    req = r;
    return new Promise<UpgradeResponse>((resolve, reject) => {
      r.on("error", (err) => {
        const mapped = fromNodeError(err, connected ? "request" : "connect");
        const failure =
          mapped.code === "ERR_UPSTREAM_CONNECT"
            ? "connect-failure"
            : mapped.code === "ERR_UPSTREAM_PROTOCOL"
              ? "protocol"
              : "reset";
        reject(new UpstreamAttemptError(failure, mapped));
      });
      r.on("upgrade", (res: http.IncomingMessage, upgraded: Duplex, head: Buffer) => {
        const body = Readable.from([]);
        const value = res.headers.upgrade;
        resolve({
          status: res.statusCode ?? 101,
          headers: forwardable(res.headers),
          body,
          trailers: () => undefined,
          abort: () => upgraded.destroy(),
          switched: { socket: upgraded, head, upgrade: typeof value === "string" ? value : protocol },
        });
      });
      r.on("response", (res: http.IncomingMessage) => {
        // Not switched: one ordinary response, then this connection is done.
        finished(res, () => socket.destroy());
        resolve({
          status: res.statusCode ?? 502,
          headers: forwardable(res.headers),
          body: res,
          trailers: () =>
            Object.keys(res.trailers).length > 0 ? (res.trailers as Record<string, string>) : undefined,
          abort: () => socket.destroy(),
        });
      });
      r.end();
    });
  })();
  return { response, abort, localAddress: () => localAddress };
}
