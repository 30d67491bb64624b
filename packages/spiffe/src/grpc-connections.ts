import type { Socket } from "node:net";
import type { ChannelCredentials } from "@grpc/grpc-js";

/**
 * `credentials` with the socket of every connection the channel makes kept in `sockets` until it
 * closes. grpc-js can drop a channel but not a connection attempt in progress (a TLS handshake with a
 * peer that accepted and never answers waits for good), so a client that gives up on a channel ends
 * them itself. Everything but the connector is the credentials' own, called on them.
 */
export function recordingSockets(credentials: ChannelCredentials, sockets: Set<Socket>): ChannelCredentials {
  const createSecureConnector: ChannelCredentials["_createSecureConnector"] = (...args) => {
    const connector = credentials._createSecureConnector(...args);
    return {
      connect(socket) {
        sockets.add(socket);
        socket.once("close", () => sockets.delete(socket));
        return connector.connect(socket);
      },
      waitForReady: () => connector.waitForReady(),
      getCallCredentials: () => connector.getCallCredentials(),
      destroy: () => connector.destroy(),
    };
  };
  return new Proxy(credentials, {
    get(target, property) {
      if (property === "_createSecureConnector") return createSecureConnector;
      const value: unknown = Reflect.get(target, property, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
}

/** Ends every socket in `sockets`. */
export function destroyAll(sockets: Set<Socket>): void {
  for (const socket of sockets) socket.destroy();
  sockets.clear();
}
