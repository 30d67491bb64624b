// A DNS server over UDP and TCP that hands each well-formed query to one handler function and
// takes care of the rest: malformed and unsupported queries, handler failures, UDP truncation, TCP
// framing, limits and shutdown.
import dgram from "node:dgram";
import net from "node:net";
import { type Logger, noopLogger } from "@ambient/telemetry";
import { RecordType, ResponseCode, recordTypeName } from "./constants.js";
import { DnsError } from "./errors.js";
import { type DnsMessage, decodeMessage, encodeMessage, encodeQuestion, HEADER_BYTES } from "./message.js";
import { readName } from "./name.js";
import { errnoOf, toDnsError } from "./node-error.js";
import { ADVERTISED_UDP_PAYLOAD, replyTo, udpPayloadLimit } from "./records.js";
import { TcpConnection } from "./tcp-connection.js";

/** One query as the handler sees it. */
export interface DnsRequest {
  /** The decoded query: exactly one question, opcode QUERY. */
  readonly message: DnsMessage;
  /** The query exactly as received (for forwarding). */
  readonly bytes: Uint8Array;
  readonly protocol: "udp" | "tcp";
  /** The client's address and port. */
  readonly remote: { readonly address: string; readonly port: number };
  /** The address and port the query arrived on. */
  readonly local: { readonly address: string; readonly port: number };
}

/** A message to encode, or the bytes of a complete response (e.g. a forwarded one). The server sets the id to the query's either way. */
export type DnsHandler = (request: DnsRequest) => DnsMessage | Uint8Array | Promise<DnsMessage | Uint8Array>;

/** Options of {@link DnsServer}. */
export interface DnsServerOptions {
  /** Answers every well-formed query; a throw or rejection becomes a SERVFAIL reply. */
  handler: DnsHandler;
  /** Default `noopLogger`. */
  logger?: Logger;
  /**
   * Default 5000: a TCP connection with no query in flight and no complete query arriving for this
   * long is closed (bytes of a query still incomplete do not count). At most 2147483647 (2^31 - 1).
   */
  tcpIdleTimeoutMs?: number;
  /** Default 256: TCP connections over this number are closed at once. */
  maxTcpConnections?: number;
  /**
   * Default 1024 queries being handled at once over all sockets; over it, UDP queries are dropped
   * (the client retries) and TCP connections stop reading until one finishes.
   */
  maxInFlight?: number;
}

const MAX_TCP_MESSAGE = 0xffff;
const LISTEN_TRIES = 5;

function positiveInteger(value: number | undefined, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (!Number.isInteger(value) || value < 1) {
    throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `${what} must be a positive integer, not ${value}`);
  }
  return value;
}

/** A FORMERR reply for a query whose header is readable but the rest is not: the header alone, no question. */
function formatErrorReply(query: Uint8Array): Uint8Array {
  const out = new Uint8Array(HEADER_BYTES);
  out[0] = query[0] as number;
  out[1] = query[1] as number;
  // QR, the query's opcode and RD; RCODE FORMERR; all counts zero.
  out[2] = 0x80 | ((query[2] as number) & 0x79);
  out[3] = ResponseCode.FORMERR;
  return out;
}

/**
 * The OPT record of a truncated reply (RFC 6891 section 7: even the minimal response to an EDNS query
 * carries one, else the client takes the server for one without EDNS). It keeps the extended rcode,
 * version and flags of the response's own OPT record, when the response has one, and drops its options.
 */
function truncatedOpt(response: Uint8Array): Uint8Array {
  let ttl = 0;
  try {
    ttl = decodeMessage(response).additionals.find((r) => r.type === RecordType.OPT)?.ttl ?? 0;
  } catch {
    // bytes from the handler that do not decode: a bare OPT record
  }
  const out = Buffer.alloc(11);
  // Root owner (the zero byte already there), type, payload size, extended rcode/version/flags, no RDATA.
  out.writeUInt16BE(RecordType.OPT, 1);
  out.writeUInt16BE(ADVERTISED_UDP_PAYLOAD, 3);
  out.writeUInt32BE(ttl, 5);
  return out;
}

/**
 * Where the answer records of `response` that fit in `budget` bytes end, with how many they are: the
 * header, its one question and whole answer records from the first, cut before the first that does
 * not fit. Undefined when the bytes do not walk as a response with one question (bytes from a
 * handler are not checked otherwise). Compression pointers only point backwards, so a prefix of the
 * message is still a well-formed message once its counts are fixed.
 */
function answersThatFit(response: Uint8Array, budget: number): { end: number; count: number } | undefined {
  if (response.length < HEADER_BYTES) return undefined;
  const counts = new DataView(response.buffer, response.byteOffset, response.byteLength);
  if (counts.getUint16(4) !== 1) return undefined;
  try {
    let end = readName(response, HEADER_BYTES).end + 4;
    if (end > budget) return undefined;
    const answers = counts.getUint16(6);
    let count = 0;
    while (count < answers) {
      const fixed = readName(response, end).end;
      if (fixed + 10 > response.length) return undefined;
      const next = fixed + 10 + counts.getUint16(fixed + 8);
      if (next > response.length) return undefined;
      if (next > budget) break;
      end = next;
      count += 1;
    }
    return { end, count };
  } catch {
    return undefined;
  }
}

/**
 * The response cut to fit `limit` bytes, TC set, so the client asks again over TCP: the header, the
 * question, as many whole answer records as fit, and for an EDNS query an OPT record. The authority
 * and additional sections are dropped. Keeping the answers that fit (as RFC 2181 section 9 allows)
 * matters to stub resolvers that never retry over TCP: they use the first addresses of a large
 * answer instead of finding none.
 */
function truncatedReply(response: Uint8Array, query: DnsMessage, limit: number): Uint8Array {
  const edns = query.additionals.some((r) => r.type === RecordType.OPT);
  const opt = edns ? truncatedOpt(response) : new Uint8Array(0);
  const fit = answersThatFit(response, limit - opt.length);
  // Bytes that cannot be walked: just the header and the query's own question.
  const kept =
    fit === undefined
      ? Buffer.concat([
          response.subarray(0, HEADER_BYTES),
          encodeQuestion(query.questions[0] as DnsMessage["questions"][number]),
        ])
      : response.subarray(0, fit.end);
  const out = new Uint8Array(kept.length + opt.length);
  out.set(kept);
  out[2] = (out[2] as number) | 0x02;
  out.fill(0, 4, HEADER_BYTES);
  out[5] = 1;
  out[6] = (fit?.count ?? 0) >>> 8;
  out[7] = (fit?.count ?? 0) & 0xff;
  if (edns) out[11] = 1;
  out.set(opt, kept.length);
  return out;
}

/** The highest EDNS version this server speaks (RFC 6891 defines only 0). */
const EDNS_VERSION = 0;
/** The extended rcode BADVERS (16): its upper 8 bits go in the OPT record's TTL, the lower 4 in the header. */
const BADVERS = 16;

/**
 * Why a query's OPT records are not acceptable (RFC 6891 6.1.1: at most one, in the additional section,
 * owned by the root), or undefined when they are fine.
 */
function optProblem(query: DnsMessage): string | undefined {
  const misplaced = [...query.answers, ...query.authorities].some((r) => r.type === RecordType.OPT);
  if (misplaced) return "an OPT record outside the additional section";
  const opts = query.additionals.filter((r) => r.type === RecordType.OPT);
  if (opts.length > 1) return `${opts.length} OPT records`;
  if (opts.length === 1 && opts[0]?.name !== "") return "an OPT record not owned by the root";
  return undefined;
}

/** The EDNS version of a query, or undefined when it has no OPT record. */
function ednsVersion(query: DnsMessage): number | undefined {
  const opt = query.additionals.find((r) => r.type === RecordType.OPT);
  return opt === undefined ? undefined : (opt.ttl >>> 16) & 0xff;
}

/** The BADVERS reply to a query of a higher EDNS version: no records but an OPT record of version 0. */
function badVersionReply(query: DnsMessage): Uint8Array {
  const opt = {
    name: "",
    type: RecordType.OPT,
    class: ADVERTISED_UDP_PAYLOAD,
    // Extended rcode in the top byte, then the version this server speaks, no flags.
    ttl: ((BADVERS >>> 4) * 0x1000000 + (EDNS_VERSION << 16)) >>> 0,
    data: new Uint8Array(0),
  };
  return encodeMessage(replyTo(query, { rcode: BADVERS & 0xf, additionals: [opt] }));
}

type Endpoint = { readonly address: string; readonly port: number };

/**
 * A DNS server: serves UDP sockets and TCP servers it is given or binds itself, and answers each
 * query through the handler. See the package README for what it replies on its own.
 */
export class DnsServer {
  readonly #handler: DnsHandler;
  readonly #logger: Logger;
  readonly #tcpIdleTimeoutMs: number;
  readonly #maxTcpConnections: number;
  readonly #maxInFlight: number;
  readonly #udpSockets = new Set<dgram.Socket>();
  readonly #tcpServers = new Set<net.Server>();
  readonly #connections = new Set<TcpConnection>();
  readonly #waitingForRoom = new Set<TcpConnection>();
  #inFlight = 0;
  #closed = false;

  constructor(options: DnsServerOptions) {
    if (options === null || typeof options !== "object" || typeof options.handler !== "function") {
      throw new DnsError("ERR_DNS_INVALID_ARGUMENT", "a DNS server needs a handler function");
    }
    this.#handler = options.handler;
    this.#logger = options.logger ?? noopLogger;
    this.#tcpIdleTimeoutMs = positiveInteger(options.tcpIdleTimeoutMs, 5000, "tcpIdleTimeoutMs");
    // Node.js fires a timer longer than 2^31 - 1 ms after 1 ms.
    if (this.#tcpIdleTimeoutMs > 2 ** 31 - 1) {
      throw new DnsError(
        "ERR_DNS_INVALID_ARGUMENT",
        `tcpIdleTimeoutMs must be at most ${2 ** 31 - 1}, not ${this.#tcpIdleTimeoutMs}`,
      );
    }
    this.#maxTcpConnections = positiveInteger(options.maxTcpConnections, 256, "maxTcpConnections");
    this.#maxInFlight = positiveInteger(options.maxInFlight, 1024, "maxInFlight");
  }

  /** Serves a bound UDP socket made by the caller (e.g. bound to a descriptor from another network namespace). */
  serveUdp(socket: dgram.Socket): void {
    this.#checkOpen();
    this.#udpSockets.add(socket);
    socket.on("error", (err) => this.#logger.warn({ err }, "DNS UDP socket error"));
    socket.on("close", () => this.#udpSockets.delete(socket));
    socket.on("message", (bytes, rinfo) => {
      if (this.#inFlight >= this.#maxInFlight) {
        this.#logger.debug({ remote: rinfo.address }, "DNS server at its in-flight limit, UDP query dropped");
        return;
      }
      let local: Endpoint;
      try {
        const { address, port } = socket.address();
        local = { address, port };
      } catch {
        return; // closed meanwhile
      }
      const remote = { address: rinfo.address, port: rinfo.port };
      void this.#answer(bytes, "udp", remote, local).then((response) => {
        if (response === undefined || this.#closed || !this.#udpSockets.has(socket)) return;
        try {
          socket.send(response, rinfo.port, rinfo.address, (err) => {
            if (err) this.#logger.debug({ err, remote: rinfo.address }, "DNS UDP reply not sent");
          });
        } catch (err) {
          this.#logger.debug({ err }, "DNS UDP reply not sent");
        }
      });
    });
  }

  /** Serves a listening TCP server made by the caller. */
  serveTcp(server: net.Server): void {
    this.#checkOpen();
    this.#tcpServers.add(server);
    server.on("error", (err) => this.#logger.warn({ err }, "DNS TCP server error"));
    server.on("close", () => this.#tcpServers.delete(server));
    server.on("connection", (socket: net.Socket) => this.#accept(socket));
  }

  /**
   * Binds UDP and TCP on the same host (an IP literal) and port. With port 0 both get the same
   * ephemeral port, trying again a few times when TCP finds the port UDP got already taken. Rejects
   * with `ERR_DNS_BIND` (errno in `details.errno`).
   */
  async listen(options: { host: string; port: number }): Promise<{ address: string; port: number }> {
    this.#checkOpen();
    const { host, port } = options;
    const family = net.isIP(host);
    if (family === 0)
      throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `host ${JSON.stringify(host)} is not an IP address`);
    if (!Number.isInteger(port) || port < 0 || port > 0xffff) {
      throw new DnsError("ERR_DNS_INVALID_ARGUMENT", `port ${port} is not in 0..65535`);
    }
    for (let attempt = 1; ; attempt += 1) {
      const udp = dgram.createSocket(family === 6 ? "udp6" : "udp4");
      try {
        await new Promise<void>((resolve, reject) => {
          udp.once("error", reject);
          udp.bind({ address: host, port, exclusive: true }, () => {
            udp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        throw toDnsError(err, "ERR_DNS_BIND", `cannot bind UDP ${host}:${port}`);
      }
      const bound = udp.address();
      const tcp = net.createServer({ allowHalfOpen: true });
      try {
        await new Promise<void>((resolve, reject) => {
          tcp.once("error", reject);
          tcp.listen({ host, port: bound.port, exclusive: true }, () => {
            tcp.off("error", reject);
            resolve();
          });
        });
      } catch (err) {
        udp.close();
        if (port === 0 && errnoOf(err) === "EADDRINUSE" && attempt < LISTEN_TRIES) continue;
        throw toDnsError(err, "ERR_DNS_BIND", `cannot listen on TCP ${host}:${bound.port}`);
      }
      if (this.#closed) {
        udp.close();
        tcp.close();
        throw new DnsError("ERR_DNS_CLOSED", "the DNS server was closed");
      }
      this.serveUdp(udp);
      this.serveTcp(tcp);
      return { address: bound.address, port: bound.port };
    }
  }

  /**
   * Stops serving: closes every UDP socket and TCP server (also those given to `serveUdp` and
   * `serveTcp`), destroys TCP connections; answers still being made are dropped.
   */
  async close(): Promise<void> {
    this.#closed = true;
    const waits: Promise<void>[] = [];
    for (const socket of this.#udpSockets) {
      waits.push(
        new Promise<void>((resolve) => {
          try {
            socket.close(() => resolve());
          } catch {
            resolve(); // already closed
          }
        }),
      );
    }
    for (const server of this.#tcpServers) {
      waits.push(new Promise<void>((resolve) => server.close(() => resolve())));
    }
    for (const connection of this.#connections) connection.destroy();
    this.#waitingForRoom.clear();
    this.#udpSockets.clear();
    this.#tcpServers.clear();
    await Promise.all(waits);
  }

  #checkOpen(): void {
    if (this.#closed) throw new DnsError("ERR_DNS_CLOSED", "the DNS server was closed");
  }

  #accept(socket: net.Socket): void {
    if (this.#closed || this.#connections.size >= this.#maxTcpConnections) {
      socket.on("error", () => {});
      socket.destroy();
      this.#logger.debug(
        { remote: socket.remoteAddress },
        "DNS TCP connection refused: at the connection limit",
      );
      return;
    }
    const remote = { address: socket.remoteAddress ?? "", port: socket.remotePort ?? 0 };
    const local = { address: socket.localAddress ?? "", port: socket.localPort ?? 0 };
    const connection = new TcpConnection(
      socket,
      {
        answer: (frame) => this.#answer(frame, "tcp", remote, local),
        hasRoom: () => this.#inFlight < this.#maxInFlight,
        waitForRoom: (c) => this.#waitingForRoom.add(c),
        closed: (c) => {
          this.#connections.delete(c);
          this.#waitingForRoom.delete(c);
        },
      },
      this.#tcpIdleTimeoutMs,
      this.#logger,
    );
    this.#connections.add(connection);
  }

  /** The response to one query, or undefined when nothing is to be sent. Never rejects. */
  async #answer(
    bytes: Uint8Array,
    protocol: "udp" | "tcp",
    remote: Endpoint,
    local: Endpoint,
  ): Promise<Uint8Array | undefined> {
    this.#inFlight += 1;
    try {
      const response = await this.#respond(bytes, protocol, remote, local);
      return this.#closed ? undefined : response;
    } catch (err) {
      this.#logger.error({ err }, "DNS query failed unexpectedly");
      return undefined;
    } finally {
      this.#inFlight -= 1;
      this.#wakeWaiting();
    }
  }

  #wakeWaiting(): void {
    for (const connection of this.#waitingForRoom) {
      if (this.#inFlight >= this.#maxInFlight) return;
      this.#waitingForRoom.delete(connection);
      connection.resume();
    }
  }

  async #respond(
    bytes: Uint8Array,
    protocol: "udp" | "tcp",
    remote: Endpoint,
    local: Endpoint,
  ): Promise<Uint8Array | undefined> {
    if (bytes.length < HEADER_BYTES || ((bytes[2] as number) & 0x80) !== 0) {
      this.#logger.debug(
        { remote: remote.address, protocol, bytes: bytes.length },
        "DNS message dropped: not a query",
      );
      return undefined;
    }
    let query: DnsMessage;
    try {
      query = decodeMessage(bytes);
    } catch (err) {
      this.#logger.debug({ err, remote: remote.address, protocol }, "malformed DNS query");
      return formatErrorReply(bytes);
    }
    const badOpt = optProblem(query);
    if (badOpt !== undefined) {
      this.#logger.debug(
        { remote: remote.address, protocol, problem: badOpt },
        "DNS query with a bad OPT record",
      );
      // replyTo answers with at most one OPT record, and only when the query had one.
      return encodeMessage(replyTo(query, { rcode: ResponseCode.FORMERR }));
    }
    const version = ednsVersion(query);
    if (version !== undefined && version > EDNS_VERSION) return badVersionReply(query);
    if (query.opcode !== 0) return encodeMessage(replyTo(query, { rcode: ResponseCode.NOTIMP }));
    if (query.questions.length !== 1) return encodeMessage(replyTo(query, { rcode: ResponseCode.FORMERR }));
    const question = query.questions[0] as DnsMessage["questions"][number];

    let response: Uint8Array;
    try {
      const result = await this.#handler({ message: query, bytes, protocol, remote, local });
      if (result instanceof Uint8Array) {
        if (result.length < HEADER_BYTES)
          throw new DnsError("ERR_DNS_MALFORMED", "the handler returned fewer bytes than a header");
        response = Uint8Array.from(result);
        response[0] = query.id >>> 8;
        response[1] = query.id & 0xff;
      } else {
        response = encodeMessage({ ...result, id: query.id });
      }
    } catch (err) {
      this.#logger.warn(
        { err, name: question.name, type: recordTypeName(question.type), protocol, remote: remote.address },
        "DNS handler failed, answering SERVFAIL",
      );
      return encodeMessage(replyTo(query, { rcode: ResponseCode.SERVFAIL }));
    }

    if (protocol === "udp") {
      const limit = udpPayloadLimit(query);
      return response.length > limit ? truncatedReply(response, query, limit) : response;
    }
    if (response.length > MAX_TCP_MESSAGE) {
      this.#logger.warn(
        { name: question.name, type: recordTypeName(question.type), bytes: response.length },
        "DNS response too long even for TCP, answering SERVFAIL",
      );
      return encodeMessage(replyTo(query, { rcode: ResponseCode.SERVFAIL }));
    }
    return response;
  }
}

/** Creates a {@link DnsServer}; call `listen`, `serveUdp` or `serveTcp` on it. */
export function createDnsServer(options: DnsServerOptions): DnsServer {
  return new DnsServer(options);
}
