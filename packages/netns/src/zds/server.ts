/**
 * The node agent side of ZDS (istio-cni's part): listen on the seqpacket socket, and for each
 * ztunnel that connects replay every known pod, then `SnapshotSent`; afterwards send new pods to the
 * newest ztunnel and deletions to all, one request at a time, each waiting for its ACK.
 */
import { EventEmitter } from "node:events";
import { type Logger, noopLogger } from "@ambient/telemetry";
import { NetnsError } from "../errors.js";
import { closeQuietly } from "../libc.js";
import type { NetnsHandle } from "../netns.js";
import { type SeqpacketMessage, SeqpacketServer, type SeqpacketSocket } from "../seqpacket.js";
import { requireLogger, requireMs, requireObject, requireString } from "../validate.js";
import { DEFAULT_ZDS_PATH } from "./client.js";
import { decodeAck, decodeHello, encodeRequest, type ZdsRequest, type ZdsWorkloadInfo } from "./codec.js";

export interface ZdsServerOptions {
  /** Socket path to listen on; a stale file there is replaced. Default `/var/run/ztunnel/ztunnel.sock`. */
  path?: string;
  logger?: Logger;
  /**
   * How long a ztunnel may take to say hello and to answer each request before it is disconnected,
   * from 1 ms to 2^31-1. Default 5 s.
   */
  ackTimeoutMs?: number;
}

/** A pod the node agent knows. */
export interface ZdsServerWorkload {
  uid: string;
  workloadInfo: ZdsWorkloadInfo;
  /**
   * The pod's network namespace; the server owns it from now on and closes it when the pod is
   * deleted or the server closes. Without one the pod is sent as `KeepWorkload` in snapshots.
   */
  netns?: NetnsHandle;
}

interface Waiting {
  resolve(error: string): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One connected ztunnel: requests go out one at a time, each matched with the next answer. */
class ZtunnelConnection {
  #queue: Promise<unknown> = Promise.resolve();
  #waiting: Waiting | undefined;
  helloSeen = false;
  synced = false;

  constructor(
    readonly socket: SeqpacketSocket,
    readonly id: number,
    private readonly ackTimeoutMs: number,
  ) {}

  /** Sends a request after those before it; resolves with the Ack's error ("" for an ACK). */
  request(request: ZdsRequest, netns?: NetnsHandle): Promise<string> {
    const run = () =>
      new Promise<string>((resolve, reject) => {
        if (this.socket.closed) {
          reject(new NetnsError("ERR_ZDS_DISCONNECTED", "the ztunnel disconnected"));
          return;
        }
        // The descriptor is read only now: the pod may have been deleted (and its handle closed)
        // while earlier requests waited, and a stale number could by now name another file.
        if (netns?.closed) {
          reject(
            new NetnsError(
              "ERR_NETNS_CLOSED",
              `the namespace of ${request.type} was closed before it was sent`,
            ),
          );
          return;
        }
        const timer = setTimeout(() => {
          this.#waiting = undefined;
          reject(
            new NetnsError("ERR_ZDS_TIMEOUT", `no answer to ${request.type} in ${this.ackTimeoutMs} ms`),
          );
          this.socket.close(); // a late answer would be taken for the next request's
        }, this.ackTimeoutMs);
        this.#waiting = { resolve, reject, timer };
        try {
          this.socket.send(encodeRequest(request), netns ? [netns.fd] : []);
        } catch (err) {
          clearTimeout(timer);
          this.#waiting = undefined;
          reject(err);
        }
      });
    const result = this.#queue.then(run, run);
    this.#queue = result.catch(() => undefined);
    return result;
  }

  /** An answer arrived; false when nothing was waiting for one (a protocol error). */
  answer(error: string): boolean {
    const waiting = this.#waiting;
    if (!waiting) return false;
    this.#waiting = undefined;
    clearTimeout(waiting.timer);
    waiting.resolve(error);
    return true;
  }

  closed(): void {
    const waiting = this.#waiting;
    this.#waiting = undefined;
    if (waiting) {
      clearTimeout(waiting.timer);
      waiting.reject(new NetnsError("ERR_ZDS_DISCONNECTED", "the ztunnel disconnected before answering"));
    }
  }
}

/**
 * Events: `'connection'` (a ztunnel said hello; its id), `'synced'` (its snapshot was acknowledged),
 * `'disconnect'` (its id), `'error'` (listener failures).
 */
export class ZdsServer extends EventEmitter {
  readonly path: string;
  readonly #logger: Logger;
  readonly #ackTimeoutMs: number;
  readonly #workloads = new Map<string, ZdsServerWorkload>();
  readonly #connections: ZtunnelConnection[] = [];
  #listener: SeqpacketServer | undefined;
  #nextId = 1;
  #closed = false;

  constructor(options: ZdsServerOptions = {}) {
    super();
    requireObject(options, "options");
    this.path = requireString(options.path ?? DEFAULT_ZDS_PATH, "path");
    this.#logger = options.logger ?? noopLogger;
    requireLogger(this.#logger);
    this.#ackTimeoutMs = requireMs(options.ackTimeoutMs ?? 5000, "ackTimeoutMs", 1);
  }

  /** Starts listening on `path` (replacing a stale socket file). Throws `ERR_NETNS_SYSCALL` on failure. */
  listen(): this {
    const listener = new SeqpacketServer({ maxMessageBytes: 1024, maxFds: 1 });
    listener.listen(this.path, { replace: true });
    listener.on("connection", (socket: SeqpacketSocket) => this.#accept(socket));
    listener.on("error", (err: Error) => this.emit("error", err));
    this.#listener = listener;
    return this;
  }

  /** Connected ztunnels that said hello. */
  get connections(): number {
    return this.#connections.filter((c) => c.helloSeen).length;
  }

  /** The pods known, by uid. */
  workloads(): string[] {
    return [...this.#workloads.keys()];
  }

  /**
   * Records a pod and sends it to the newest connected ztunnel. Resolves `true` once that ztunnel
   * ACKs, `false` when none is connected (it goes out with the next snapshot); rejects with
   * `ERR_ZDS_NACK` (the pod stays known, as in istio-cni) or `ERR_ZDS_TIMEOUT`/`ERR_ZDS_DISCONNECTED`.
   * A pod with the same uid is replaced, and its old netns handle closed.
   */
  async addWorkload(workload: ZdsServerWorkload): Promise<boolean> {
    this.#checkOpen();
    const previous = this.#workloads.get(workload.uid);
    if (previous?.netns && previous.netns !== workload.netns) previous.netns.close();
    this.#workloads.set(workload.uid, workload);
    const newest = this.#connections.filter((c) => c.helloSeen).at(-1);
    if (!newest || !workload.netns) return false;
    const error = await newest.request(
      { type: "add", uid: workload.uid, workloadInfo: workload.workloadInfo },
      workload.netns,
    );
    if (error)
      throw new NetnsError("ERR_ZDS_NACK", `ztunnel refused ${workload.uid}: ${error}`, { reason: error });
    return true;
  }

  /**
   * Forgets a pod, closes its netns handle, and tells every connected ztunnel (deletions go to all,
   * so one that is shutting down lets go too). Resolves with the NACK reasons received, if any.
   */
  async deleteWorkload(uid: string): Promise<string[]> {
    this.#checkOpen();
    this.#workloads.get(uid)?.netns?.close();
    this.#workloads.delete(uid);
    const results = await Promise.allSettled(
      this.#connections.filter((c) => c.helloSeen).map((c) => c.request({ type: "del", uid })),
    );
    return results.flatMap((r) => {
      if (r.status === "rejected") return [String((r.reason as Error).message)];
      return r.value ? [r.value] : [];
    });
  }

  /** Stops listening, disconnects every ztunnel and closes every netns handle it holds. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#listener?.close();
    for (const connection of this.#connections.splice(0)) connection.socket.close();
    for (const workload of this.#workloads.values()) workload.netns?.close();
    this.#workloads.clear();
  }

  #checkOpen(): void {
    if (this.#closed) throw new NetnsError("ERR_NETNS_CLOSED", "the ZDS server is closed");
  }

  #accept(socket: SeqpacketSocket): void {
    if (this.#closed) {
      socket.close();
      return;
    }
    const connection = new ZtunnelConnection(socket, this.#nextId++, this.#ackTimeoutMs);
    this.#connections.push(connection);
    const helloTimer = setTimeout(() => {
      this.#logger.warn({ connection: connection.id }, "ztunnel did not say hello in time");
      socket.close();
    }, this.#ackTimeoutMs);
    socket.on("message", (message: SeqpacketMessage) => {
      for (const fd of message.fds) closeQuietly(fd); // ztunnel never sends descriptors
      if (!connection.helloSeen) {
        clearTimeout(helloTimer);
        let version: number;
        try {
          version = decodeHello(message.data).version;
        } catch (err) {
          this.#logger.warn({ err, connection: connection.id }, "undecodable hello");
          socket.close();
          return;
        }
        connection.helloSeen = true;
        this.#logger.info({ connection: connection.id, version }, "ztunnel connected");
        this.emit("connection", connection.id);
        void this.#sendSnapshot(connection);
        return;
      }
      let error: string;
      try {
        error = decodeAck(message.data).error;
      } catch (err) {
        this.#logger.warn({ err, connection: connection.id }, "undecodable answer; disconnecting");
        socket.close();
        return;
      }
      if (!connection.answer(error)) {
        this.#logger.warn({ connection: connection.id }, "an answer nobody asked for; disconnecting");
        socket.close();
      }
    });
    socket.on("error", (err: Error) =>
      this.#logger.warn({ err, connection: connection.id }, "ZDS connection failed"),
    );
    socket.on("close", () => {
      clearTimeout(helloTimer);
      connection.closed();
      const index = this.#connections.indexOf(connection);
      if (index >= 0) this.#connections.splice(index, 1);
      if (connection.helloSeen) this.emit("disconnect", connection.id);
    });
  }

  async #sendSnapshot(connection: ZtunnelConnection): Promise<void> {
    try {
      for (const workload of [...this.#workloads.values()]) {
        if (this.#workloads.get(workload.uid) !== workload) continue; // deleted or replaced meanwhile
        let error: string;
        try {
          error = workload.netns
            ? await connection.request(
                { type: "add", uid: workload.uid, workloadInfo: workload.workloadInfo },
                workload.netns,
              )
            : await connection.request({ type: "keep", uid: workload.uid });
        } catch (err) {
          if (err instanceof NetnsError && err.code === "ERR_NETNS_CLOSED") continue;
          throw err;
        }
        if (error) this.#logger.warn({ uid: workload.uid, error }, "ztunnel refused a pod of the snapshot");
      }
      const error = await connection.request({ type: "snapshot-sent" });
      if (error) this.#logger.warn({ error }, "ztunnel refused the snapshot");
      connection.synced = true;
      this.emit("synced", connection.id);
    } catch (err) {
      this.#logger.warn({ err, connection: connection.id }, "sending the snapshot failed");
    }
  }
}

/** Creates a ZDS server; call `listen()` to start it. */
export function createZdsServer(options: ZdsServerOptions = {}): ZdsServer {
  return new ZdsServer(options);
}
