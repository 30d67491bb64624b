import type { Readable, Writable } from "node:stream";
import { RouterError } from "./errors.js";

/**
 * Streams a request body to the current upstream attempt while keeping a copy (up to `limit` bytes)
 * so a retry can replay it. Mirrors get the same chunks without ever slowing the main request.
 * Between attempts (a retry's back-off) nothing reads the client, so a body cannot outgrow the copy
 * while no attempt takes it.
 */
export class RequestBody {
  private chunks: Buffer[] = [];
  private recorded = 0;
  private target: Writable | undefined;
  private readonly taps = new Set<Writable>();
  private started = false;
  private ended = false;
  /** Bytes received from the client so far. */
  bytes = 0;
  /** False once the body outgrew the replay buffer: no more retries. */
  replayable = true;
  /** The stream idle timer, refreshed on every chunk received. */
  idle: NodeJS.Timeout | undefined;
  /** When the whole body had been received (`performance.now()`); undefined until then. */
  completedAt: number | undefined;
  /**
   * Why the body is incomplete, once the client reset its request, went away before the body ended,
   * or ended it short of its `content-length`: no attempt may end an upstream request with it.
   */
  private cut: RouterError | undefined;
  /** The client's `content-length`, when it sent one. */
  private readonly declared: number | undefined;

  constructor(
    private readonly source: Readable,
    private readonly limit: number,
    private readonly tapLimit: number,
  ) {
    const length = (source as { headers?: Record<string, unknown> }).headers?.["content-length"];
    this.declared = typeof length === "string" && /^\d+$/.test(length) ? Number(length) : undefined;
  }

  /**
   * The body is cut short: every sink is destroyed, never ended. An upstream HTTP/1.1 request ended
   * here would tell the backend its body is whole while the client still owes bytes (or will never
   * send them): the connection would go back to the pool with the backend reading the next request's
   * bytes as this body, or run what the next client writes as a request of its own. Node's HTTP/2
   * server ends the body of a stream the client reset as if it had finished, and checks no
   * `content-length`, so both are looked at here.
   */
  private fail(reason: string): void {
    if (this.ended || this.cut !== undefined) return;
    this.cut = new RouterError("ERR_BODY_INCOMPLETE", `request body incomplete: ${reason}`);
    this.replayable = false;
    this.chunks = [];
    const target = this.target;
    this.target = undefined;
    target?.destroy(this.cut);
    for (const tap of this.taps) tap.destroy(this.cut);
    this.taps.clear();
  }

  private start(): void {
    if (this.started) return;
    this.started = true;
    this.source.on("data", (chunk: Buffer) => {
      if (this.cut !== undefined) return;
      this.bytes += chunk.length;
      // Node's HTTP/2 server lets DATA run past the content-length: what the backend was told the
      // body is would end inside these bytes, and it would read the rest as a request of its own.
      if (this.declared !== undefined && this.bytes > this.declared) {
        this.fail(`more than the ${this.declared} bytes its content-length declares`);
        return;
      }
      this.idle?.refresh();
      if (this.replayable) {
        this.recorded += chunk.length;
        if (this.recorded > this.limit) {
          this.replayable = false;
          this.chunks = [];
        } else this.chunks.push(chunk);
      }
      for (const tap of this.taps) {
        if (tap.destroyed || tap.writableLength > this.tapLimit) {
          this.taps.delete(tap);
          tap.destroy();
        } else tap.write(chunk);
      }
      const t = this.target;
      if (t !== undefined && !t.destroyed && !t.write(chunk)) {
        this.source.pause();
        t.once("drain", () => {
          if (this.target === t) this.source.resume();
        });
      }
    });
    this.source.on("aborted", () => this.fail("the client reset its request"));
    // Closed (reset, destroyed, its connection gone) before its end: the rest will never come.
    this.source.on("close", () => this.fail("the client went away before the body ended"));
    this.source.on("end", () => {
      const stream = (this.source as { stream?: { rstCode?: number } }).stream;
      if ((this.source as { aborted?: boolean }).aborted === true || (stream?.rstCode ?? 0) !== 0) {
        this.fail("the client reset its request");
        return;
      }
      if (this.declared !== undefined && this.bytes !== this.declared) {
        this.fail(`${this.bytes} of the ${this.declared} bytes its content-length declares`);
        return;
      }
      this.ended = true;
      this.completedAt = performance.now();
      this.target?.end();
      for (const tap of this.taps) tap.end();
      this.taps.clear();
    });
  }

  /** Whether the whole body has been received. */
  get complete(): boolean {
    return this.ended;
  }

  /**
   * Sends the body (replaying what was already received) into `sink`. Throws `ERR_BODY_NOT_REPLAYABLE`,
   * writing nothing, once bytes were consumed that the copy no longer holds: `sink` would get a body
   * without its start, or none at all.
   */
  pipeTo(sink: Writable): void {
    if (this.cut !== undefined) throw this.cut;
    if (!this.replayable) {
      throw new RouterError(
        "ERR_BODY_NOT_REPLAYABLE",
        `request body cannot be sent again: ${this.bytes} bytes were read, more than the ${this.limit}-byte retry buffer`,
      );
    }
    this.target = sink;
    for (const c of this.chunks) sink.write(c);
    if (this.ended) sink.end();
    else if (this.source.isPaused()) this.source.resume();
    this.start();
  }

  /** Adds a fire-and-forget copy; it starts at the current position, so add it before `pipeTo`. */
  tap(sink: Writable): void {
    if (this.cut !== undefined) {
      sink.destroy(this.cut);
      return;
    }
    if (this.ended) {
      for (const c of this.chunks) sink.write(c);
      sink.end();
      return;
    }
    for (const c of this.chunks) sink.write(c);
    this.taps.add(sink);
  }

  /**
   * Stops feeding the current target (it failed or was abandoned) and stops reading the client until
   * the next {@link pipeTo}: read on while no attempt takes them, its bytes could outgrow the copy and
   * leave nothing a retry could send.
   */
  detach(): void {
    this.target = undefined;
    if (this.started && !this.ended) this.source.pause();
  }

  /**
   * No attempt will take the body any more: the rest is read and dropped (mirrors still get it), so the
   * client is not left stalled and an HTTP/1.1 connection can carry its next request.
   */
  release(): void {
    this.target = undefined;
    this.replayable = false;
    this.chunks = [];
    if (this.started && !this.ended) this.source.resume();
  }
}
