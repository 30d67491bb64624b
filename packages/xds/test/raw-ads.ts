// A bare ADS stream for protocol tests: encodes requests and decodes responses with no client logic.
import * as grpc from "@grpc/grpc-js";
import { ADS_SERVICE } from "../src/ads-service.js";
import type { envoy } from "../src/gen/types.js";
import { type MessageInit, typeRegistry } from "../src/type-registry.js";

type DeltaResponse = envoy.service.discovery.v3.DeltaDiscoveryResponse;
type SotwResponse = envoy.service.discovery.v3.DiscoveryResponse;

export interface RawStream<Req, Res> {
  send(request: MessageInit<Req>): void;
  sendRaw(bytes: Uint8Array): void;
  /** Next response; rejects if the stream ends first. */
  next(): Promise<Res>;
  /** Resolves with the final status when the stream ends. */
  readonly status: Promise<{ code: number; details: string }>;
  /** Bytes received so far. */
  received(): number;
  close(): void;
}

function open<Req, Res>(
  port: number,
  method: string,
  reqName: string,
  resName: string,
  metadata?: Record<string, string>,
): RawStream<Req, Res> {
  const client = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  for (const [k, v] of Object.entries(metadata ?? {})) md.set(k, v);
  const call = client.makeBidiStreamRequest(
    `/${ADS_SERVICE}/${method}`,
    (v: Uint8Array) => Buffer.from(v),
    (b: Buffer) => b,
    md,
  );
  const queue: Res[] = [];
  const waiters: { resolve: (r: Res) => void; reject: (e: Error) => void }[] = [];
  let ended: Error | undefined;
  let bytes = 0;
  let resolveStatus: (s: { code: number; details: string }) => void = () => {};
  const status = new Promise<{ code: number; details: string }>((r) => {
    resolveStatus = r;
  });
  call.on("data", (b: Buffer) => {
    bytes += b.length;
    const res = typeRegistry.decode(resName, b) as Res;
    const w = waiters.shift();
    if (w) w.resolve(res);
    else queue.push(res);
  });
  const end = (err: Error) => {
    ended = err;
    for (const w of waiters.splice(0)) w.reject(err);
  };
  call.on("status", (s: grpc.StatusObject) => {
    resolveStatus({ code: s.code, details: s.details });
    end(new Error(`stream ended: ${s.code} ${s.details}`));
    client.close();
  });
  call.on("error", () => {});
  return {
    send: (request) => {
      call.write(typeRegistry.encode(reqName, request as never));
    },
    sendRaw: (b) => {
      call.write(b);
    },
    next: () => {
      const r = queue.shift();
      if (r !== undefined) return Promise.resolve(r);
      if (ended) return Promise.reject(ended);
      return new Promise<Res>((resolve, reject) => waiters.push({ resolve, reject }));
    },
    status,
    received: () => bytes,
    close: () => {
      call.cancel();
      client.close();
    },
  };
}

export function openDelta(
  port: number,
  metadata?: Record<string, string>,
): RawStream<envoy.service.discovery.v3.DeltaDiscoveryRequest, DeltaResponse> {
  return open(
    port,
    "DeltaAggregatedResources",
    "envoy.service.discovery.v3.DeltaDiscoveryRequest",
    "envoy.service.discovery.v3.DeltaDiscoveryResponse",
    metadata,
  );
}

export function openSotw(
  port: number,
  metadata?: Record<string, string>,
): RawStream<envoy.service.discovery.v3.DiscoveryRequest, SotwResponse> {
  return open(
    port,
    "StreamAggregatedResources",
    "envoy.service.discovery.v3.DiscoveryRequest",
    "envoy.service.discovery.v3.DiscoveryResponse",
    metadata,
  );
}

/** Names of the resources in a delta response, sorted. */
export function deltaNames(res: DeltaResponse): string[] {
  return res.resources.map((r) => r.name).sort();
}
