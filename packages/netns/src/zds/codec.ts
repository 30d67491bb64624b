/**
 * ZDS messages (package `istio.workload.zds`) as plain TypeScript values, encoded and decoded with
 * protobufjs from our own proto/zds.proto. Requests are a tagged union, so a handler `switch`es on
 * `type` instead of probing which oneof field is set.
 */
import protobuf from "protobufjs/light.js";
import { NetnsError } from "../errors.js";
import { zdsDescriptor } from "../gen/zds-descriptor.js";

/** The only protocol version there is (`Version.V1`). */
export const ZDS_VERSION = 1;

/** Who a pod is: `WorkloadInfo`. */
export interface ZdsWorkloadInfo {
  name: string;
  namespace: string;
  serviceAccount: string;
}

/** A `WorkloadRequest`, node agent to ztunnel. An `add` travels with the pod's netns descriptor. */
export type ZdsRequest =
  | { type: "add"; uid: string; workloadInfo?: ZdsWorkloadInfo }
  | { type: "keep"; uid: string }
  | { type: "del"; uid: string }
  | { type: "snapshot-sent" };

/** A `WorkloadResponse`: `error` empty for an ACK, the reason for a NACK. */
export interface ZdsAck {
  error: string;
}

const root = protobuf.Root.fromJSON(zdsDescriptor as protobuf.INamespace);
const Hello = root.lookupType("istio.workload.zds.ZdsHello");
const Request = root.lookupType("istio.workload.zds.WorkloadRequest");
const Response = root.lookupType("istio.workload.zds.WorkloadResponse");

function decode(type: protobuf.Type, bytes: Uint8Array): Record<string, unknown> {
  try {
    return type.toObject(type.decode(bytes), { defaults: false, oneofs: true }) as Record<string, unknown>;
  } catch (cause) {
    throw new NetnsError("ERR_ZDS_PROTOCOL", `undecodable ${type.name}`, { cause });
  }
}

/** `ZdsHello{version}`. */
export function encodeHello(version = ZDS_VERSION): Uint8Array {
  return Hello.encode(Hello.fromObject({ version })).finish();
}

/** The version a `ZdsHello` announces (0 when unset). */
export function decodeHello(bytes: Uint8Array): { version: number } {
  const hello = decode(Hello, bytes);
  return { version: typeof hello.version === "number" ? hello.version : 0 };
}

export function encodeRequest(request: ZdsRequest): Uint8Array {
  let message: Record<string, unknown>;
  switch (request.type) {
    case "add":
      message = { add: { uid: request.uid, workloadInfo: request.workloadInfo } };
      break;
    case "keep":
      message = { keep: { uid: request.uid } };
      break;
    case "del":
      message = { del: { uid: request.uid } };
      break;
    case "snapshot-sent":
      message = { snapshotSent: {} };
      break;
  }
  return Request.encode(Request.fromObject(message)).finish();
}

const str = (v: unknown): string => (typeof v === "string" ? v : "");

/** Decodes a `WorkloadRequest`; one without a payload we know is `ERR_ZDS_PROTOCOL`. */
export function decodeRequest(bytes: Uint8Array): ZdsRequest {
  const message = decode(Request, bytes);
  const body = (message[String(message.payload)] ?? {}) as Record<string, unknown>;
  switch (message.payload) {
    case "add": {
      const info = body.workloadInfo as Record<string, unknown> | undefined;
      const request: ZdsRequest = { type: "add", uid: str(body.uid) };
      if (info) {
        request.workloadInfo = {
          name: str(info.name),
          namespace: str(info.namespace),
          serviceAccount: str(info.serviceAccount),
        };
      }
      return request;
    }
    case "keep":
      return { type: "keep", uid: str(body.uid) };
    case "del":
      return { type: "del", uid: str(body.uid) };
    case "snapshotSent":
      return { type: "snapshot-sent" };
    default:
      throw new NetnsError("ERR_ZDS_PROTOCOL", "WorkloadRequest without a known payload");
  }
}

/** `WorkloadResponse{ack{error}}`: pass no error (or "") for an ACK. */
export function encodeAck(error = ""): Uint8Array {
  // An ACK leaves the field unset, as proto3 encoders do for an empty string.
  return Response.encode(Response.fromObject({ ack: error ? { error } : {} })).finish();
}

/** Decodes a `WorkloadResponse`; one without an `ack` is `ERR_ZDS_PROTOCOL`. */
export function decodeAck(bytes: Uint8Array): ZdsAck {
  const message = decode(Response, bytes);
  if (message.payload !== "ack") throw new NetnsError("ERR_ZDS_PROTOCOL", "WorkloadResponse without an ack");
  return { error: str((message.ack as Record<string, unknown>).error) };
}
