/**
 * The ztunnel side of ZDS: connect to the node agent's seqpacket socket, say hello, and turn its
 * requests into calls on a handler (start serving a pod, stop serving it), answering each with an
 * ACK or a NACK. It also keeps the snapshot bookkeeping, so a handler never sees the protocol.
 */
import { EventEmitter } from "node:events";
import { fstatSync } from "node:fs";
import { type Logger, noopLogger } from "@ambient/telemetry";
import { NetnsError } from "../errors.js";
import { CLONE_NEWNET, closeQuietly, libc } from "../libc.js";
import { adoptNetns, type NetnsHandle } from "../netns.js";
import { type SeqpacketMessage, SeqpacketSocket } from "../seqpacket.js";
import { requireFunction, requireLogger, requireMs, requireObject, requireString } from "../validate.js";
import { decodeRequest, encodeAck, encodeHello, type ZdsRequest, type ZdsWorkloadInfo } from "./codec.js";

/** Where istio-cni listens and ztunnel connects; ztunnel `INPOD_UDS`. */
export const DEFAULT_ZDS_PATH = "/var/run/ztunnel/ztunnel.sock";

/** A pod handed over by the node agent. */
export interface ZdsWorkload {
  uid: string;
  workloadInfo: ZdsWorkloadInfo;
  /**
   * The pod's network namespace. Yours once `addWorkload` returns, or throws an error it keeps the
   * pod pending with (see {@link ZdsClientHandler.addWorkload}): close it when the pod goes.
   */
  netns: NetnsHandle;
}

/** Why a pod stops being served. */
export type ZdsDeleteReason =
  /** The node agent sent `DelWorkload`. */
  | "deleted"
  /** A reconnect's snapshot did not list it: it went away while ztunnel was disconnected. */
  | "not-in-snapshot"
  /** It was added again with another network namespace (the pod sandbox was recreated). */
  | "replaced";

/** What the in-pod proxy does with the node agent's requests. */
export interface ZdsClientHandler {
  /**
   * Start serving a pod (open its listeners in `workload.netns`). Throwing (or rejecting) NACKs the
   * request with the error's message, and the client closes `workload.netns`; unless the error's
   * `details.pending` is `true` (the project's error classes carry `details`): the handler keeps
   * the pod and its namespace to start it later, as ztunnel retries the pods it could not start,
   * while istio-cni fails the pod's CNI ADD on the NACK. Either way a refused pod's later delete,
   * its absence from a snapshot, or its add again in another namespace reaches `deleteWorkload`, as
   * a served pod's would; an add again in the same namespace is passed on (to try it now).
   */
  addWorkload(workload: ZdsWorkload): void | Promise<void>;
  /**
   * Stop serving a pod (served, or refused by `addWorkload`) and close its netns handle if kept.
   * A throw is logged and NACKed; the pod is forgotten anyway.
   */
  deleteWorkload(uid: string, reason: ZdsDeleteReason): void | Promise<void>;
}

export interface ZdsClientOptions {
  /** The node agent's socket. Default `/var/run/ztunnel/ztunnel.sock` (ztunnel `INPOD_UDS`). */
  path?: string;
  handler: ZdsClientHandler;
  logger?: Logger;
  /** First reconnect delay, from 1 ms to 2^31-1. Default 10 ms, as ztunnel. */
  reconnectInitialDelayMs?: number;
  /** Reconnect delays double up to this (at least the initial delay, at most 2^31-1 ms). Default 15 s, as ztunnel. */
  reconnectMaxDelayMs?: number;
}

interface Served {
  netnsId: string;
}

/** Identity of a namespace descriptor: the nsfs inode (and device) it points at. */
function netnsId(fd: number): string {
  const st = fstatSync(fd);
  return `${st.dev}:${st.ino}`;
}

function isNetns(fd: number): boolean {
  return libc().nsType(fd) === CLONE_NEWNET;
}

/**
 * Longest NACK text sent, in UTF-8 bytes. The node agent reads each answer into 1 KiB and treats a
 * longer one as a failed read: istio-cni drops the connection when that happens in a snapshot (our
 * server does at any time), and the replayed snapshot would be refused the same way, forever. The
 * full reason still goes to the log and the `'nack'` event.
 */
const MAX_NACK_BYTES = 1000;

/** `error`, cut on a character boundary to fit {@link MAX_NACK_BYTES}. */
function fitNack(error: string): string {
  const bytes = Buffer.from(error, "utf8");
  if (bytes.length <= MAX_NACK_BYTES) return error;
  const marker = " ...";
  let end = MAX_NACK_BYTES - marker.length;
  // Back up to the first byte of a character (continuation bytes are 10xxxxxx).
  while (end > 0 && ((bytes[end] as number) & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString("utf8") + marker;
}

function closedBeforeSnapshot(): NetnsError {
  return new NetnsError("ERR_NETNS_CLOSED", "the ZDS client was closed before a snapshot came");
}

/** Whether a handler's add failure says it keeps the pod (and its namespace) pending. */
function keptPending(err: unknown): boolean {
  if (typeof err !== "object" || err === null) return false;
  const details = (err as { details?: unknown }).details;
  return (
    typeof details === "object" && details !== null && (details as { pending?: unknown }).pending === true
  );
}

/** A protocol violation: NACKed, then the connection is dropped and made again. */
class ProtocolViolation extends Error {}

/**
 * Events: `'connect'` (hello sent), `'snapshot'` (a connection's snapshot is reconciled),
 * `'disconnect'` (`Error | undefined`), `'nack'` (`{ request, error }`: a request this side refused).
 */
export class ZdsClient extends EventEmitter {
  readonly path: string;
  readonly #handler: ZdsClientHandler;
  readonly #logger: Logger;
  readonly #initialDelay: number;
  readonly #maxDelay: number;
  #delay: number;
  #socket: SeqpacketSocket | undefined;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Pods being served, across connections. */
  readonly #served = new Map<string, Served>();
  /**
   * Pods whose add the handler refused, across connections: the handler may keep them pending, so
   * their removal still goes to it.
   */
  readonly #refused = new Map<string, Served>();
  /** Per connection: whether SnapshotSent came, and the uids the snapshot listed so far. */
  #snapshotDone = false;
  #snapshotUids = new Set<string>();
  #everSnapshotted = false;
  /** The connection whose snapshot was reconciled last. */
  #syncedSocket: SeqpacketSocket | undefined;
  #readyWaiters: Array<{ resolve(): void; reject(err: Error): void }> = [];
  #work: Promise<void> = Promise.resolve();

  constructor(options: ZdsClientOptions) {
    super();
    requireObject(options, "options");
    this.path = requireString(options.path ?? DEFAULT_ZDS_PATH, "path");
    requireObject(options.handler, "handler");
    requireFunction(options.handler.addWorkload, "handler.addWorkload");
    requireFunction(options.handler.deleteWorkload, "handler.deleteWorkload");
    this.#handler = options.handler;
    this.#logger = options.logger ?? noopLogger;
    requireLogger(this.#logger);
    this.#initialDelay = requireMs(options.reconnectInitialDelayMs ?? 10, "reconnectInitialDelayMs", 1);
    this.#maxDelay = requireMs(
      options.reconnectMaxDelayMs ?? 15_000,
      "reconnectMaxDelayMs",
      this.#initialDelay,
    );
    this.#delay = this.#initialDelay;
    this.#connect();
  }

  /** True while connected to the node agent. */
  get connected(): boolean {
    return this.#socket !== undefined;
  }

  /** True once the current connection's snapshot was reconciled (ztunnel reports Ready then). */
  get synced(): boolean {
    return this.#socket !== undefined && this.#syncedSocket === this.#socket;
  }

  /** The uids of the pods being served. */
  workloads(): string[] {
    return [...this.#served.keys()];
  }

  /**
   * Resolves once a first snapshot has been reconciled; rejects with `ERR_NETNS_CLOSED` when the
   * client is closed before that, since no snapshot can come any more.
   */
  ready(): Promise<void> {
    if (this.#everSnapshotted) return Promise.resolve();
    if (this.#closed) return Promise.reject(closedBeforeSnapshot());
    return new Promise((resolve, reject) => this.#readyWaiters.push({ resolve, reject }));
  }

  /** Disconnects and stops reconnecting. Pods stay served: shutting them down is the caller's job. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#socket?.close();
    this.#socket = undefined;
    for (const waiter of this.#readyWaiters.splice(0)) waiter.reject(closedBeforeSnapshot());
  }

  #connect(): void {
    this.#timer = undefined;
    if (this.#closed) return;
    let socket: SeqpacketSocket;
    try {
      socket = SeqpacketSocket.connect(this.path);
    } catch (err) {
      this.#logger.warn(
        { err, path: this.path, retryMs: this.#delay },
        "cannot reach the node agent's ZDS socket",
      );
      this.#scheduleReconnect();
      return;
    }
    this.#socket = socket;
    // After whatever the previous connection was still doing, so its late work cannot touch this
    // connection's snapshot bookkeeping.
    this.#work = this.#work.then(() => {
      this.#snapshotDone = false;
      this.#snapshotUids = new Set();
    });
    let failure: Error | undefined;
    socket.on("message", (message: SeqpacketMessage) => {
      // One at a time, in order: the node agent waits for each answer anyway.
      this.#work = this.#work.then(() => this.#process(socket, message));
    });
    socket.on("error", (err: Error) => {
      failure = err;
    });
    socket.on("close", () => {
      if (this.#socket === socket) this.#socket = undefined;
      this.#logger.info({ err: failure, path: this.path }, "ZDS connection closed");
      this.emit("disconnect", failure);
      this.#scheduleReconnect();
    });
    try {
      socket.send(encodeHello());
    } catch (err) {
      failure = err as Error;
      socket.close();
      return;
    }
    this.#logger.info({ path: this.path }, "connected to the node agent");
    this.emit("connect");
  }

  #scheduleReconnect(): void {
    if (this.#closed || this.#timer) return;
    const delay = this.#delay;
    this.#delay = Math.min(this.#maxDelay, this.#delay * 2);
    this.#timer = setTimeout(() => this.#connect(), delay);
  }

  async #process(socket: SeqpacketSocket, message: SeqpacketMessage): Promise<void> {
    if (socket.closed) {
      for (const fd of message.fds) closeQuietly(fd);
      return;
    }
    let request: ZdsRequest | undefined;
    let error = "";
    let violation = false;
    try {
      request = decodeRequest(message.data);
      if (request.type !== "add" && message.fds.length > 0) {
        throw new ProtocolViolation(`a ${request.type} request must not carry file descriptors`);
      }
      error = await this.#apply(request, message.fds, socket);
    } catch (err) {
      violation =
        err instanceof ProtocolViolation || (err instanceof NetnsError && err.code === "ERR_ZDS_PROTOCOL");
      error = err instanceof Error ? err.message : String(err);
      if (request?.type !== "add") for (const fd of message.fds) closeQuietly(fd);
    }
    if (error) {
      this.#logger.warn({ request, error }, "NACK to the node agent");
      this.emit("nack", { request, error });
    }
    if (socket.closed) return;
    try {
      socket.send(encodeAck(fitNack(error)));
    } catch {
      // the connection just closed; the node agent replays its snapshot on the next one
    }
    if (violation) socket.close();
  }

  /** Applies one request; returns "" to ACK or a reason to NACK. */
  async #apply(request: ZdsRequest, fds: number[], socket: SeqpacketSocket): Promise<string> {
    switch (request.type) {
      case "add":
        return this.#add(request.uid, request.workloadInfo, fds);
      case "keep":
        if (this.#snapshotDone) throw new ProtocolViolation("KeepWorkload after SnapshotSent");
        this.#snapshotUids.add(request.uid);
        return "";
      case "del":
        if (!this.#snapshotDone) {
          // Before the snapshot ends a delete only takes the pod out of it; reconciling removes it.
          this.#snapshotUids.delete(request.uid);
          return "";
        }
        return this.#delete(request.uid, "deleted");
      case "snapshot-sent": {
        if (this.#snapshotDone) throw new ProtocolViolation("SnapshotSent twice on one connection");
        const errors: string[] = [];
        for (const uid of [...this.#served.keys(), ...this.#refused.keys()]) {
          if (!this.#snapshotUids.has(uid)) {
            const err = await this.#delete(uid, "not-in-snapshot");
            if (err) errors.push(err);
          }
        }
        this.#snapshotDone = true;
        this.#syncedSocket = socket;
        this.#snapshotUids.clear();
        this.#delay = this.#initialDelay;
        this.#everSnapshotted = true;
        for (const waiter of this.#readyWaiters.splice(0)) waiter.resolve();
        this.emit("snapshot");
        return errors.join("; ");
      }
    }
  }

  async #add(uid: string, workloadInfo: ZdsWorkloadInfo | undefined, fds: number[]): Promise<string> {
    if (fds.length !== 1) {
      for (const fd of fds) closeQuietly(fd);
      throw new ProtocolViolation(`AddWorkload must carry exactly one file descriptor, got ${fds.length}`);
    }
    const fd = fds[0] as number;
    if (!workloadInfo) {
      closeQuietly(fd);
      throw new ProtocolViolation("AddWorkload without workload_info");
    }
    if (!isNetns(fd)) {
      closeQuietly(fd);
      throw new ProtocolViolation("AddWorkload's file descriptor is not a network namespace");
    }
    if (!this.#snapshotDone) this.#snapshotUids.add(uid);
    const id = netnsId(fd);
    const existing = this.#served.get(uid);
    if (existing?.netnsId === id) {
      closeQuietly(fd); // already served in this very namespace
      return "";
    }
    // A refused pod added again in the same namespace goes to the handler as is, which tries it
    // now; in another namespace it is replaced, as a served one.
    const refused = this.#refused.get(uid);
    if (existing !== undefined || (refused !== undefined && refused.netnsId !== id)) {
      const err = await this.#delete(uid, "replaced");
      if (err) this.#logger.warn({ uid, err }, "removing the replaced pod failed");
    }
    const netns = adoptNetns(fd, `zds:${uid}`);
    try {
      await this.#handler.addWorkload({ uid, workloadInfo, netns });
    } catch (err) {
      if (!keptPending(err)) netns.close();
      this.#refused.set(uid, { netnsId: id });
      return `failed to start the proxy for ${uid}: ${err instanceof Error ? err.message : String(err)}`;
    }
    this.#refused.delete(uid);
    this.#served.set(uid, { netnsId: id });
    return "";
  }

  async #delete(uid: string, reason: ZdsDeleteReason): Promise<string> {
    const served = this.#served.delete(uid);
    const refused = this.#refused.delete(uid);
    // A pod never added (or already gone) is no news to the handler.
    if (!served && !refused) return "";
    try {
      await this.#handler.deleteWorkload(uid, reason);
      return "";
    } catch (err) {
      this.#logger.error({ uid, err }, "stopping a pod's proxy failed");
      return `failed to stop the proxy for ${uid}: ${err instanceof Error ? err.message : String(err)}`;
    }
  }
}

/** Connects to the node agent (and keeps reconnecting) and serves its requests through `handler`. */
export function createZdsClient(options: ZdsClientOptions): ZdsClient {
  return new ZdsClient(options);
}
