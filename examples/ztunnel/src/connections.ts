// The proxy's open connections and sockets, in one place, so close(), a pod's removal and a policy
// change can each find and close exactly the ones they own.
import type { Socket } from "node:net";
import type { AuthorizationRequest } from "@ambient/policy";

/** One open proxied connection, as `/config_dump` lists it. */
export interface ConnectionSummary {
  id: number;
  direction: "inbound" | "outbound";
  source: string;
  destination: string;
  sourceIdentity?: string;
  destinationIdentity?: string;
}

/** A connection the registry tracks. */
export interface TrackedConnection extends ConnectionSummary {
  /** Inbound only: the policy request as of the current state (workload policies may change). */
  policyRequest?: () => AuthorizationRequest;
  /** In-pod mode: uid of the pod whose proxy carries it. */
  owner?: string;
  /** Its byte counts, reported to the TCP metrics while it is open ({@link ConnectionRegistry.reportBytes}). */
  traffic?: { reportBytes(): void };
  /** Closes the connection; called without `this`. */
  close(): void;
}

/** Open connections and the raw sockets behind them (also those still dialing). */
export class ConnectionRegistry {
  #nextId = 1;
  readonly #connections = new Map<number, TrackedConnection>();
  readonly #sockets = new Map<Socket, string | undefined>();
  /** One `close` listener for every tracked socket (`this` is the socket), not a closure per socket. */
  readonly #untrack: (this: Socket) => void;

  constructor() {
    const sockets = this.#sockets;
    this.#untrack = function (this: Socket) {
      sockets.delete(this);
    };
  }

  /** Registers a connection; returns its id. */
  add(connection: Omit<TrackedConnection, "id">): number {
    const id = this.#nextId++;
    this.#connections.set(id, new Tracked(id, connection));
    return id;
  }

  delete(id: number): void {
    this.#connections.delete(id);
  }

  /** Tracks a socket until it closes, so close() and pod removal can destroy it. */
  trackSocket(socket: Socket, owner?: string): void {
    if (socket.destroyed) return;
    if (this.#sockets.has(socket)) {
      this.#sockets.set(socket, owner);
      return;
    }
    this.#sockets.set(socket, owner);
    socket.on("close", this.#untrack);
  }

  connections(): TrackedConnection[] {
    return [...this.#connections.values()];
  }

  /** Adds the bytes every open connection moved since its last report to the TCP metrics. */
  reportBytes(): void {
    for (const c of this.#connections.values()) c.traffic?.reportBytes();
  }

  summaries(): ConnectionSummary[] {
    return this.connections().map((c) => {
      const summary: ConnectionSummary = {
        id: c.id,
        direction: c.direction,
        source: c.source,
        destination: c.destination,
      };
      if (c.sourceIdentity !== undefined) summary.sourceIdentity = c.sourceIdentity;
      if (c.destinationIdentity !== undefined) summary.destinationIdentity = c.destinationIdentity;
      return summary;
    });
  }

  /** Sockets still open (for tests and leak checks), optionally of one owner. */
  socketCount(owner?: string): number {
    if (owner === undefined) return this.#sockets.size;
    let n = 0;
    for (const o of this.#sockets.values()) if (o === owner) n++;
    return n;
  }

  /** Closes every connection and socket, or only those of `owner`. */
  closeAll(owner?: string): void {
    for (const c of this.connections()) if (owner === undefined || c.owner === owner) c.close();
    for (const [s, o] of [...this.#sockets]) if (owner === undefined || o === owner) s.destroy();
  }
}

/**
 * A registered connection. Its own class (one shape for all of them) rather than a spread copy of the
 * caller's object, which V8 gives a hidden class of its own each time: a few hundred bytes per open
 * connection.
 */
class Tracked implements TrackedConnection {
  readonly id: number;
  readonly direction: "inbound" | "outbound";
  readonly source: string;
  readonly destination: string;
  readonly sourceIdentity: string | undefined;
  readonly destinationIdentity: string | undefined;
  readonly policyRequest: (() => AuthorizationRequest) | undefined;
  readonly owner: string | undefined;
  readonly traffic: { reportBytes(): void } | undefined;
  /** The caller's `close`, kept alone (called without `this`), so its object can be collected. */
  readonly #close: () => void;

  constructor(id: number, c: Omit<TrackedConnection, "id">) {
    this.id = id;
    this.direction = c.direction;
    this.source = c.source;
    this.destination = c.destination;
    this.sourceIdentity = c.sourceIdentity;
    this.destinationIdentity = c.destinationIdentity;
    this.policyRequest = c.policyRequest;
    this.owner = c.owner;
    this.traffic = c.traffic;
    this.#close = c.close;
  }

  close(): void {
    const close = this.#close;
    close();
  }
}

/** Something that closes gracefully within a time limit (an HBONE server). */
interface GracefulClose {
  close(options: { timeoutMs: number }): Promise<void>;
}

/**
 * Servers a graceful shutdown is closing (GOAWAY, then their connections have until the deadline),
 * counted so the shutdown knows when they are all gone.
 */
export class ClosingServers {
  #closing = 0;

  /** Starts closing `server`; its connections have `timeoutMs` to end. */
  close(server: GracefulClose, timeoutMs: number): void {
    this.#closing++;
    server
      .close({ timeoutMs })
      .catch(() => {})
      .finally(() => {
        this.#closing--;
      });
  }

  /** Every server handed to {@link close} has closed. */
  get done(): boolean {
    return this.#closing === 0;
  }
}
