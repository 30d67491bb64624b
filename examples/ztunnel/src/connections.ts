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
  close(): void;
}

/** Open connections and the raw sockets behind them (also those still dialing). */
export class ConnectionRegistry {
  #nextId = 1;
  readonly #connections = new Map<number, TrackedConnection>();
  readonly #sockets = new Map<Socket, string | undefined>();

  /** Registers a connection; returns its id. */
  add(connection: Omit<TrackedConnection, "id">): number {
    const id = this.#nextId++;
    this.#connections.set(id, { ...connection, id });
    return id;
  }

  delete(id: number): void {
    this.#connections.delete(id);
  }

  /** Tracks a socket until it closes, so close() and pod removal can destroy it. */
  trackSocket(socket: Socket, owner?: string): void {
    if (socket.destroyed) return;
    this.#sockets.set(socket, owner);
    socket.once("close", () => this.#sockets.delete(socket));
  }

  connections(): TrackedConnection[] {
    return [...this.#connections.values()];
  }

  summaries(): ConnectionSummary[] {
    return this.connections().map(({ policyRequest: _p, close: _c, owner: _o, ...summary }) => summary);
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
