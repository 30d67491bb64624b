// Forwards queries to upstream resolvers the way a careful stub resolver does: every try has a
// fresh random id and a fresh UDP socket (so a fresh source port), connected to the nameserver, and
// only an answer to exactly the question asked (or an error header with no question) is taken.
// Blind spoofing then has to guess 32 bits within one timeout. The client gets its question back in
// its own spelling and only the answer records about the name it asked.
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import net from "node:net";
import { type Logger, noopLogger } from "@ambient/telemetry";
import { answerForClient } from "./client-answer.js";
import { ResponseCode, recordTypeName } from "./constants.js";
import { DnsError } from "./errors.js";
import { type DnsMessage, type DnsQuestion, decodeMessage, encodeMessage, HEADER_BYTES } from "./message.js";
import { sameName } from "./name.js";
import { replyTo } from "./records.js";

/** An upstream resolver. */
export interface Nameserver {
  /** An IPv4 or IPv6 literal. */
  readonly address: string;
  /** Default 53. */
  readonly port?: number;
}

/** Options of {@link DnsForwarder}. */
export interface DnsForwarderOptions {
  /**
   * At least one; tried in order. Each is `{ address, port? }` or a plain address string (port 53),
   * the shape `readResolvConf` returns. IPv4 or IPv6 literals, else `ERR_DNS_INVALID_ARGUMENT`.
   */
  nameservers: readonly (Nameserver | string)[];
  /**
   * Default 2000: how long one try waits for its answer (resolv.conf `timeout:` is in seconds); above
   * 0 and at most 2147483647 (2^31 - 1, the longest Node.js timer).
   */
  timeoutMs?: number;
  /** Default 2: rounds over the nameserver list (resolv.conf `attempts:`). */
  attempts?: number;
  /** Default `noopLogger`. */
  logger?: Logger;
  /**
   * Makes the UDP socket for one try (default dgram.createSocket("udp4"/"udp6")); lets a caller make
   * it in another network namespace or set a mark, and choose by the nameserver it is for. Must return
   * an unbound socket or one bound to an ephemeral port.
   */
  createUdpSocket?: (family: 4 | 6, nameserver: { address: string; port: number }) => dgram.Socket;
  /** Opens the TCP connection to a nameserver (default net.connect). */
  connectTcp?: (nameserver: { address: string; port: number }) => net.Socket;
}

/** Options of one {@link DnsForwarder.forward} call. */
export interface ForwardOptions {
  /**
   * Default "udp" (then TCP when the answer is truncated); "tcp" asks over TCP straight away. Anything
   * else rejects with `ERR_DNS_INVALID_ARGUMENT`.
   */
  protocol?: "udp" | "tcp";
  /** Aborting it rejects the forward with `ERR_DNS_ABORTED` and closes its sockets. */
  signal?: AbortSignal;
}

interface Upstream {
  readonly address: string;
  readonly port: number;
  readonly family: 4 | 6;
}

/** How one try ended; a try rejects only when the forward is aborted or the forwarder closed. */
type TryOutcome =
  | {
      readonly kind: "answer";
      readonly bytes: Uint8Array;
      readonly message: DnsMessage;
      readonly dropped: number;
    }
  | { readonly kind: "timeout" }
  | { readonly kind: "failed"; readonly error: unknown };

/**
 * Whether an answer's rcode is an error (FORMERR, SERVFAIL, NOTIMP, REFUSED, YXDOMAIN, YXRRSET,
 * NXRRSET, NOTAUTH, NOTZONE) rather than a statement about the name (NOERROR, NXDOMAIN) or a code
 * with no assigned meaning (11-15), which is passed on as it is.
 */
function isErrorRcode(rcode: number): boolean {
  return rcode !== ResponseCode.NOERROR && rcode !== ResponseCode.NXDOMAIN && rcode <= 10;
}

/** Longest delay a Node.js timer keeps: a longer one fires after 1 ms instead. */
const MAX_TIMER_MS = 2 ** 31 - 1;

function invalid(why: string): DnsError {
  return new DnsError("ERR_DNS_INVALID_ARGUMENT", why);
}

function toUpstream(entry: Nameserver | string, index: number): Upstream {
  const nameserver: Nameserver = typeof entry === "string" ? { address: entry } : entry;
  if (nameserver === null || typeof nameserver !== "object" || typeof nameserver.address !== "string") {
    throw invalid(`nameservers[${index}] must be an IP address string or { address, port? }`);
  }
  const family = net.isIP(nameserver.address);
  if (family === 0)
    throw invalid(`nameservers[${index}] ${JSON.stringify(nameserver.address)} is not an IP address`);
  const port = nameserver.port ?? 53;
  if (!Number.isInteger(port) || port < 1 || port > 0xffff)
    throw invalid(`nameservers[${index}] port ${String(port)} is not in 1..65535`);
  return { address: nameserver.address, port, family: family as 4 | 6 };
}

/** The query as bytes and decoded; validated to be a query with one question. */
function readQuery(query: DnsMessage | Uint8Array): { bytes: Uint8Array; message: DnsMessage } {
  if (query === null || typeof query !== "object") {
    throw invalid("the query to forward must be a DnsMessage or its bytes");
  }
  if (query instanceof Uint8Array) {
    const message = decodeMessage(query);
    if (message.response || message.questions.length !== 1) {
      throw new DnsError("ERR_DNS_MALFORMED", "the bytes to forward are not a query with one question");
    }
    return { bytes: query, message };
  }
  if (!Array.isArray(query.questions))
    throw invalid("the query to forward must be a DnsMessage or its bytes");
  if (query.response || query.questions.length !== 1)
    throw invalid("only a query with one question can be forwarded");
  return { bytes: encodeMessage(query), message: query };
}

/**
 * The response if `bytes` answers the try: its id, and exactly the question asked (name without
 * regard to case, type and class); its bytes made into the client's reply by {@link answerForClient}.
 * A server that could not parse or will not take a query (FORMERR, REFUSED, NOTIMP, SERVFAIL) often
 * sends the header alone; such a reply is taken by its id (the socket only hears the nameserver
 * asked) and becomes a reply to `query` with that rcode. A header alone that says NOERROR or
 * NXDOMAIN, a statement about a name, is not taken without the name.
 */
function matchingAnswer(
  bytes: Uint8Array,
  id: number,
  query: DnsMessage,
): { readonly bytes: Uint8Array; readonly message: DnsMessage; readonly dropped: number } | undefined {
  if (bytes.length < HEADER_BYTES || (((bytes[0] as number) << 8) | (bytes[1] as number)) !== id)
    return undefined;
  let message: DnsMessage;
  try {
    message = decodeMessage(bytes);
  } catch {
    return undefined;
  }
  if (!message.response) return undefined;
  const question = query.questions[0] as DnsQuestion;
  if (message.questions.length === 0) {
    if (message.rcode === ResponseCode.NOERROR || message.rcode === ResponseCode.NXDOMAIN) return undefined;
    const reply = replyTo({ ...query, id }, { rcode: message.rcode });
    return { bytes: encodeMessage(reply), message: reply, dropped: 0 };
  }
  const asked = message.questions[0];
  if (message.questions.length !== 1 || asked === undefined) return undefined;
  if (
    asked.type !== question.type ||
    asked.class !== question.class ||
    !sameName(asked.name, question.name)
  ) {
    return undefined;
  }
  try {
    return { ...answerForClient(bytes, message, question), message };
  } catch {
    // Decoded, so it encodes again; should it not, it is no answer.
    return undefined;
  }
}

/** A copy of `bytes` with a new id: never writes into a buffer someone else may hold. */
function withId(bytes: Uint8Array, id: number): Uint8Array {
  const copy = Uint8Array.from(bytes);
  copy[0] = id >>> 8;
  copy[1] = id & 0xff;
  return copy;
}

/** Forwards queries to upstream nameservers over UDP, falling back to TCP for truncated answers. */
export class DnsForwarder {
  readonly #upstreams: readonly Upstream[];
  readonly #timeoutMs: number;
  readonly #attempts: number;
  readonly #logger: Logger;
  readonly #createUdpSocket: (family: 4 | 6, nameserver: { address: string; port: number }) => dgram.Socket;
  readonly #connectTcp: (nameserver: { address: string; port: number }) => net.Socket;
  readonly #active = new Set<AbortController>();
  #closed = false;

  constructor(options: DnsForwarderOptions) {
    if (options === null || typeof options !== "object") {
      throw invalid("createDnsForwarder needs an options object with nameservers");
    }
    if (!Array.isArray(options.nameservers) || options.nameservers.length === 0) {
      throw invalid("a DNS forwarder needs at least one nameserver");
    }
    this.#upstreams = options.nameservers.map(toUpstream);
    const timeoutMs = options.timeoutMs ?? 2000;
    if (typeof timeoutMs !== "number" || !(timeoutMs > 0 && timeoutMs <= MAX_TIMER_MS))
      throw invalid(
        `timeoutMs ${String(timeoutMs)} is not a number of ms above 0 and at most ${MAX_TIMER_MS}`,
      );
    const attempts = options.attempts ?? 2;
    if (!Number.isInteger(attempts) || attempts < 1)
      throw invalid(`attempts ${attempts} is not a positive integer`);
    this.#timeoutMs = timeoutMs;
    this.#attempts = attempts;
    this.#logger = options.logger ?? noopLogger;
    this.#createUdpSocket =
      options.createUdpSocket ?? ((family) => dgram.createSocket(family === 6 ? "udp6" : "udp4"));
    this.#connectTcp =
      options.connectTcp ?? ((nameserver) => net.connect(nameserver.port, nameserver.address));
  }

  /**
   * Sends the query upstream and resolves with the response's bytes, their id set to the query's, the
   * question spelled as in the query (and answer owner names equal to it), and only the answer records
   * owned by the question's name or a name its CNAME records lead to (or DNAME records above one).
   * Over UDP, a truncated answer is asked again over TCP; when that gets no answer, the truncated one
   * (TC set) is the nameserver's answer.
   * Nameservers are tried in order, `attempts` rounds: a timeout or an unreachable server moves on to
   * the next. An answer with an error rcode (SERVFAIL, REFUSED, FORMERR, NOTIMP, ...) ends its round
   * without asking the next nameserver; the next round asks again from the first, and in the last
   * round that answer is returned. So the last round decides: an error answer there is the result,
   * and if it got no answer at all, the forward rejects, whatever earlier rounds got. Rejects with
   * `ERR_DNS_UPSTREAM_TIMEOUT` when those tries all timed out, `ERR_DNS_UPSTREAM` (with `cause`) when
   * some failed otherwise, `ERR_DNS_MALFORMED` for bytes that are not a query, `ERR_DNS_ABORTED` when
   * `signal` aborts, `ERR_DNS_CLOSED` after `close()`.
   */
  async forward(query: DnsMessage | Uint8Array, options: ForwardOptions = {}): Promise<Uint8Array> {
    if (this.#closed) throw new DnsError("ERR_DNS_CLOSED", "the DNS forwarder was closed");
    const { bytes, message } = readQuery(query);
    const question = message.questions[0] as DnsQuestion;
    if (options === null || typeof options !== "object") throw invalid("forward options must be an object");
    const { signal, protocol } = options;
    if (protocol !== undefined && protocol !== "udp" && protocol !== "tcp") {
      throw invalid(`protocol ${JSON.stringify(protocol)} is not "udp" or "tcp"`);
    }
    if (signal !== undefined && !(signal instanceof AbortSignal))
      throw invalid("signal must be an AbortSignal");
    if (signal?.aborted)
      throw new DnsError("ERR_DNS_ABORTED", "the forward was aborted", { cause: signal.reason });
    const controller = new AbortController();
    const onAbort = (): void =>
      controller.abort(new DnsError("ERR_DNS_ABORTED", "the forward was aborted", { cause: signal?.reason }));
    signal?.addEventListener("abort", onAbort, { once: true });
    this.#active.add(controller);
    try {
      let lastError: unknown;
      rounds: for (let round = 0; round < this.#attempts; round += 1) {
        for (const upstream of this.#upstreams) {
          const where = {
            nameserver: upstream.address,
            port: upstream.port,
            name: question.name,
            type: recordTypeName(question.type),
          };
          let outcome =
            options.protocol === "tcp"
              ? await this.#tryTcp(upstream, bytes, message, controller.signal)
              : await this.#tryUdp(upstream, bytes, message, controller.signal);
          if (outcome.kind === "answer" && outcome.message.truncated && options.protocol !== "tcp") {
            const overTcp = await this.#tryTcp(upstream, bytes, message, controller.signal);
            // Without the whole answer the cut one is still the nameserver's answer: with TC set, a
            // client over UDP asks again over TCP itself, where a dropped query would leave it waiting.
            if (overTcp.kind === "answer") outcome = overTcp;
            else
              this.#logger.debug(
                { ...where, tcp: overTcp.kind },
                "TCP retry got no answer, passing on the truncated one",
              );
          }
          if (outcome.kind === "answer") {
            if (outcome.dropped > 0) {
              this.#logger.debug(
                { ...where, dropped: outcome.dropped },
                "answer records not about the question dropped",
              );
            }
            // An error answer still ends the round (the nameserver is up and has spoken); the next
            // round asks again from the first nameserver, which gets past a passing failure.
            if (!isErrorRcode(outcome.message.rcode) || round === this.#attempts - 1) {
              return withId(outcome.bytes, message.id);
            }
            this.#logger.debug(
              { ...where, rcode: outcome.message.rcode },
              "upstream answered with an error, asking again next round",
            );
            continue rounds;
          } else if (outcome.kind === "timeout") {
            this.#logger.debug(where, "upstream DNS try timed out");
          } else {
            this.#logger.debug({ ...where, err: outcome.error }, "upstream DNS try failed");
            lastError = outcome.error;
          }
        }
      }
      if (lastError === undefined) {
        throw new DnsError("ERR_DNS_UPSTREAM_TIMEOUT", `no nameserver answered ${question.name} in time`, {
          name: question.name,
          type: recordTypeName(question.type),
        });
      }
      throw new DnsError("ERR_DNS_UPSTREAM", `no nameserver answered ${question.name}`, {
        cause: lastError,
        name: question.name,
        type: recordTypeName(question.type),
      });
    } finally {
      this.#active.delete(controller);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  /** Closes the forwarder: forwards in flight reject with `ERR_DNS_CLOSED`, and so do later calls. */
  close(): void {
    this.#closed = true;
    for (const controller of this.#active) {
      controller.abort(new DnsError("ERR_DNS_CLOSED", "the DNS forwarder was closed"));
    }
    this.#active.clear();
  }

  /** Runs one try: `start` sets it up and calls `finish` once; sockets are released by `cleanup`. */
  #runTry(
    signal: AbortSignal,
    start: (finish: (outcome: TryOutcome) => void) => () => void,
  ): Promise<TryOutcome> {
    return new Promise<TryOutcome>((resolve, reject) => {
      if (signal.aborted) {
        reject(signal.reason);
        return;
      }
      let settled = false;
      let cleanup = (): void => {};
      const settle = (outcome: TryOutcome | { readonly kind: "aborted" }): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal.removeEventListener("abort", onAbort);
        cleanup();
        if (outcome.kind === "aborted") reject(signal.reason);
        else resolve(outcome);
      };
      const onAbort = (): void => settle({ kind: "aborted" });
      const timer = setTimeout(() => settle({ kind: "timeout" }), this.#timeoutMs);
      signal.addEventListener("abort", onAbort, { once: true });
      try {
        cleanup = start(settle);
      } catch (err) {
        settle({ kind: "failed", error: err });
      }
      if (settled) cleanup();
    });
  }

  #tryUdp(
    upstream: Upstream,
    query: Uint8Array,
    asked: DnsMessage,
    signal: AbortSignal,
  ): Promise<TryOutcome> {
    return this.#runTry(signal, (finish) => {
      const id = randomInt(0, 0x10000);
      const socket = this.#createUdpSocket(upstream.family, {
        address: upstream.address,
        port: upstream.port,
      });
      const close = (): void => {
        try {
          socket.close();
        } catch {
          // already closed
        }
      };
      socket.on("error", (error) => finish({ kind: "failed", error }));
      socket.on("message", (bytes) => {
        const answer = matchingAnswer(bytes, id, asked);
        if (answer === undefined) {
          this.#logger.debug(
            { nameserver: upstream.address, bytes: bytes.length },
            "unexpected DNS datagram ignored",
          );
          return;
        }
        finish({ kind: "answer", ...answer });
      });
      // Connected, so the kernel drops datagrams from other addresses and reports ICMP errors to us.
      socket.connect(upstream.port, upstream.address, () => {
        socket.send(withId(query, id), (error) => {
          if (error) finish({ kind: "failed", error });
        });
      });
      return close;
    });
  }

  #tryTcp(
    upstream: Upstream,
    query: Uint8Array,
    asked: DnsMessage,
    signal: AbortSignal,
  ): Promise<TryOutcome> {
    return this.#runTry(signal, (finish) => {
      const id = randomInt(0, 0x10000);
      const socket = this.#connectTcp({ address: upstream.address, port: upstream.port });
      socket.on("error", (error) => finish({ kind: "failed", error }));
      socket.on("close", () =>
        finish({
          kind: "failed",
          error: new DnsError(
            "ERR_DNS_UPSTREAM",
            `${upstream.address}:${upstream.port} closed the TCP connection unanswered`,
          ),
        }),
      );
      let pending: Buffer = Buffer.alloc(0);
      socket.on("data", (chunk: Buffer) => {
        pending = pending.length === 0 ? chunk : Buffer.concat([pending, chunk]);
        while (pending.length >= 2) {
          const length = pending.readUInt16BE(0);
          if (pending.length < 2 + length) return;
          const frame = pending.subarray(2, 2 + length);
          pending = pending.subarray(2 + length);
          const answer = matchingAnswer(frame, id, asked);
          if (answer !== undefined) {
            finish({ kind: "answer", ...answer });
            return;
          }
          this.#logger.debug({ nameserver: upstream.address }, "unexpected DNS-over-TCP frame ignored");
        }
      });
      const framed = Buffer.alloc(2 + query.length);
      framed.writeUInt16BE(query.length, 0);
      framed.set(withId(query, id), 2);
      socket.write(framed);
      return () => socket.destroy();
    });
  }
}

/** Creates a {@link DnsForwarder}. */
export function createDnsForwarder(options: DnsForwarderOptions): DnsForwarder {
  return new DnsForwarder(options);
}
