// A Delta xDS client for the scale bench that reads only the envelope of each response: the type,
// the nonce, and each resource's name and version (the Any payload is skipped, not decoded). It ACKs
// every response as a ztunnel does. What it measures is delivery: that every name and version reached
// it, and when; a few full clients (createXdsClient, which decodes every resource) check the contents.
import { adsServiceDefinition, typeRegistry } from "@ambient/xds";
import * as grpc from "@grpc/grpc-js";

/** What an envelope holds, from a `DeltaDiscoveryResponse` read without decoding any resource. */
export interface DeltaEnvelope {
  typeUrl: string;
  nonce: string;
  resources: { name: string; version: string }[];
  removed: string[];
}

const utf8 = new TextDecoder();

/** Protobuf wire reader over just the fields the envelope needs; unknown fields are skipped. */
class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start: number,
    readonly end: number,
  ) {
    this.pos = start;
  }
  varint(): number {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (this.pos >= this.end) throw new Error("truncated varint");
      const b = this.buf[this.pos++] as number;
      // Lengths and tags here fit in 2^53; multiplication keeps shifts past 31 bits exact.
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
      if (shift > 63) throw new Error("varint too long");
    }
  }
  /** Start and end of a length-delimited field's bytes. */
  bytes(): [number, number] {
    const len = this.varint();
    const start = this.pos;
    this.pos += len;
    if (this.pos > this.end) throw new Error("truncated field");
    return [start, this.pos];
  }
  string(): string {
    const [s, e] = this.bytes();
    return utf8.decode(this.buf.subarray(s, e));
  }
  skip(wireType: number): void {
    if (wireType === 0) this.varint();
    else if (wireType === 1) this.pos += 8;
    else if (wireType === 2) this.bytes();
    else if (wireType === 5) this.pos += 4;
    else throw new Error(`unsupported wire type ${wireType}`);
    if (this.pos > this.end) throw new Error("truncated field");
  }
}

/**
 * Reads a `DeltaDiscoveryResponse`: fields 2 (resources: name 3, version 1), 4 (type_url), 5 (nonce),
 * 6 (removed_resources). Every other field, and each resource's Any (field 2 of Resource), is skipped.
 */
export function decodeDeltaEnvelope(buf: Uint8Array): DeltaEnvelope {
  const out: DeltaEnvelope = { typeUrl: "", nonce: "", resources: [], removed: [] };
  const r = new Reader(buf, 0, buf.length);
  while (r.pos < r.end) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wire = tag & 7;
    if (field === 2 && wire === 2) {
      const [s, e] = r.bytes();
      const inner = new Reader(buf, s, e);
      let name = "";
      let version = "";
      while (inner.pos < inner.end) {
        const t = inner.varint();
        const f = Math.floor(t / 8);
        if (f === 3 && (t & 7) === 2) name = inner.string();
        else if (f === 1 && (t & 7) === 2) version = inner.string();
        else inner.skip(t & 7);
      }
      out.resources.push({ name, version });
    } else if (field === 4 && wire === 2) out.typeUrl = r.string();
    else if (field === 5 && wire === 2) out.nonce = r.string();
    else if (field === 6 && wire === 2) out.removed.push(r.string());
    else r.skip(wire);
  }
  return out;
}

const DELTA_REQ = "envoy.service.discovery.v3.DeltaDiscoveryRequest";

/** Options of {@link createEnvelopeClient}. */
export interface EnvelopeClientOptions {
  address: string;
  nodeId: string;
  /** Types to watch, wildcard. */
  typeUrls: readonly string[];
  /** Extra gRPC channel options (e.g. `grpc-node.flow_control_window`). */
  channelOptions?: grpc.ChannelOptions;
  /** Called for every response, after the client's state is updated and the ACK written. */
  onResponse?: (envelope: DeltaEnvelope) => void;
  /**
   * Names and versions held once for every client given the same map (clients of one process hold
   * the same names): what each client keeps is then its map's entries, not a copy of every string.
   */
  strings?: Map<string, string>;
}

/** A running envelope client. */
export interface EnvelopeClient {
  /** name → version per type URL, as the server's responses left them. */
  readonly versions: ReadonlyMap<string, ReadonlyMap<string, string>>;
  /** Resolves once a response of every watched type arrived. */
  ready(): Promise<void>;
  close(): void;
}

/** One Delta ADS stream on its own channel (one HTTP/2 connection), as each ztunnel has. */
export function createEnvelopeClient(options: EnvelopeClientOptions): EnvelopeClient {
  const def = adsServiceDefinition.DeltaAggregatedResources as grpc.MethodDefinition<Uint8Array, Buffer>;
  const channel = new grpc.Client(options.address, grpc.credentials.createInsecure(), {
    ...options.channelOptions,
    "grpc.max_receive_message_length": 200 * 1024 * 1024,
  });
  const stream = channel.makeBidiStreamRequest(def.path, def.requestSerialize, def.responseDeserialize);
  const versions = new Map<string, Map<string, string>>();
  const pending = new Set(options.typeUrls);
  let resolveReady: () => void = () => {};
  const readyPromise = new Promise<void>((resolve) => {
    resolveReady = resolve;
  });
  if (pending.size === 0) resolveReady();
  stream.on("data", (buf: Buffer) => {
    const envelope = decodeDeltaEnvelope(buf);
    let held = versions.get(envelope.typeUrl);
    if (held === undefined) {
      held = new Map();
      versions.set(envelope.typeUrl, held);
    }
    const strings = options.strings;
    for (const { name, version } of envelope.resources) {
      if (strings === undefined) held.set(name, version);
      else held.set(shared(strings, name), shared(strings, version));
    }
    for (const name of envelope.removed) held.delete(name);
    stream.write(
      typeRegistry.encode(DELTA_REQ, { typeUrl: envelope.typeUrl, responseNonce: envelope.nonce }),
    );
    if (pending.delete(envelope.typeUrl) && pending.size === 0) resolveReady();
    options.onResponse?.(envelope);
  });
  stream.on("error", () => {});
  options.typeUrls.forEach((typeUrl, i) => {
    stream.write(
      typeRegistry.encode(DELTA_REQ, {
        ...(i === 0 ? { node: { id: options.nodeId, userAgentName: "ambient-scale-bench" } } : {}),
        typeUrl,
      }),
    );
  });
  return {
    versions,
    ready: () => readyPromise,
    close() {
      stream.cancel();
      channel.close();
    },
  };
}

/** The copy of `s` in `strings`, which is `s` the first time. */
function shared(strings: Map<string, string>, s: string): string {
  const held = strings.get(s);
  if (held !== undefined) return held;
  strings.set(s, s);
  return s;
}

/** Order-independent digest of name/version pairs, to compare what two clients hold. */
export function versionsDigest(held: ReadonlyMap<string, string> | undefined): string {
  if (held === undefined) return "none";
  const lines = [...held].map(([n, v]) => `${n}\u0000${v}`).sort();
  let h = 0x811c9dc5;
  for (const line of lines) {
    for (let i = 0; i < line.length; i++) {
      h ^= line.charCodeAt(i);
      h = Math.imul(h, 0x01000193) >>> 0;
    }
    h ^= 10;
  }
  return `${held.size}:${h.toString(16)}`;
}
