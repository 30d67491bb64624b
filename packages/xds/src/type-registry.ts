import protobuf from "protobufjs/light.js";
import { XdsError } from "./errors.js";
import { descriptor } from "./gen/descriptor.js";
import type { MessageTypes } from "./gen/types.js";

/** Prefix of every type URL this package produces. */
export const TYPE_URL_PREFIX = "type.googleapis.com/";

/** Full protobuf name of every message this package knows, e.g. `istio.workload.Address`. */
export type MessageName = keyof MessageTypes;

/** A message name or its `type.googleapis.com/` type URL. */
export type MessageKey = MessageName | `${typeof TYPE_URL_PREFIX}${MessageName}`;

/** Decoded (plain object) shape for a message name or type URL; `unknown` for names outside this package. */
export type MessageOf<K extends string> = K extends `${typeof TYPE_URL_PREFIX}${infer N}`
  ? N extends MessageName
    ? MessageTypes[N]
    : unknown
  : K extends MessageName
    ? MessageTypes[K]
    : unknown;

/**
 * Input shape accepted by the encoders: every field optional, recursively. Decoded objects are
 * always valid input.
 */
export type MessageInit<T> = T extends Uint8Array
  ? Uint8Array
  : T extends readonly (infer U)[]
    ? MessageInit<U>[]
    : T extends object
      ? { [K in keyof T]?: MessageInit<T[K]> }
      : T;

/** `google.protobuf.Any` as plain object. */
export interface AnyMessage {
  typeUrl: string;
  value: Uint8Array;
}

/** Type URLs of the resources this package serves and watches. */
export const TypeUrl = {
  /** LDS, `envoy.config.listener.v3.Listener`. */
  listener: "type.googleapis.com/envoy.config.listener.v3.Listener",
  /** RDS, `envoy.config.route.v3.RouteConfiguration`. */
  routeConfiguration: "type.googleapis.com/envoy.config.route.v3.RouteConfiguration",
  /** CDS, `envoy.config.cluster.v3.Cluster`. */
  cluster: "type.googleapis.com/envoy.config.cluster.v3.Cluster",
  /** EDS, `envoy.config.endpoint.v3.ClusterLoadAssignment`. */
  clusterLoadAssignment: "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment",
  /** WDS, `istio.workload.Address` (what ztunnel watches). */
  address: "type.googleapis.com/istio.workload.Address",
  /** Older WDS form, `istio.workload.Workload`. */
  workload: "type.googleapis.com/istio.workload.Workload",
  /** WADS, `istio.security.Authorization`. */
  authorization: "type.googleapis.com/istio.security.Authorization",
  /** Packed inside `Listener.api_listener`. */
  httpConnectionManager:
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
  /** The terminal HTTP filter. */
  router: "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
} as const;

const LONG_TYPES = new Set(["int64", "uint64", "sint64", "fixed64", "sfixed64"]);

/** Name part of a type URL (everything after the last "/"), or the name itself. */
export function messageNameOf(typeUrlOrName: string): string {
  const slash = typeUrlOrName.lastIndexOf("/");
  return slash === -1 ? typeUrlOrName : typeUrlOrName.slice(slash + 1);
}

function toNumber(value: unknown): number {
  if (typeof value === "number") return value;
  if (typeof value === "object" && value !== null && "toNumber" in value) {
    return (value as { toNumber(): number }).toNumber();
  }
  return Number(value);
}

function convertValue(field: protobuf.Field, value: unknown): unknown {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return messageToPlain(resolved, value as Record<string, unknown>);
  if (resolved instanceof protobuf.Enum) {
    return typeof value === "number" ? (resolved.valuesById[value] ?? value) : value;
  }
  if (LONG_TYPES.has(field.type)) return toNumber(value);
  if (field.type === "bytes") {
    if (!(value instanceof Uint8Array)) return Buffer.alloc(0);
    return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
  }
  return value;
}

/** Plain object of a decoded protobufjs message in the package's wire shape. */
function messageToPlain(type: protobuf.Type, message: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const field of type.fieldsArray) {
    const name = field.name;
    const value = message[name];
    const present = Object.hasOwn(message, name) && value !== null && value !== undefined;
    if (field.map) {
      const map: Record<string, unknown> = {};
      if (present) {
        for (const [k, v] of Object.entries(value as Record<string, unknown>))
          map[k] = convertValue(field, v);
      }
      out[name] = map;
    } else if (field.repeated) {
      out[name] = Array.isArray(value) ? value.map((v: unknown) => convertValue(field, v)) : [];
    } else if (field.partOf || field.resolvedType instanceof protobuf.Type) {
      if (present) out[name] = convertValue(field, value);
    } else {
      out[name] = convertValue(field, present ? value : field.typeDefault);
    }
  }
  return out;
}

/**
 * Encodes and decodes every message of this package by name or type URL, and packs/unpacks `Any`.
 * One instance ({@link typeRegistry}) is shared; more descriptors can be added with {@link TypeRegistry.add}.
 */
export class TypeRegistry {
  private readonly root: protobuf.Root;
  private readonly types = new Map<string, protobuf.Type>();

  constructor() {
    this.root = protobuf.Root.fromJSON(descriptor as protobuf.INamespace);
  }

  /** Adds messages from a protobufjs JSON descriptor (for resource types outside this package). */
  add(json: protobuf.INamespace): void {
    this.root.addJSON(json.nested ?? {});
    this.root.resolveAll();
    this.types.clear();
  }

  /** True when the message name (or type URL) is known. */
  has(typeUrlOrName: string): boolean {
    return this.lookup(typeUrlOrName) !== undefined;
  }

  private lookup(typeUrlOrName: string): protobuf.Type | undefined {
    const name = messageNameOf(typeUrlOrName);
    let type = this.types.get(name);
    if (type === undefined) {
      if (name === "") return undefined;
      try {
        type = this.root.lookupType(name);
      } catch {
        return undefined;
      }
      this.types.set(name, type);
    }
    return type;
  }

  private require(typeUrlOrName: string): protobuf.Type {
    const type = this.lookup(typeUrlOrName);
    if (type === undefined) {
      throw new XdsError("ERR_XDS_UNKNOWN_TYPE", `unknown message type "${typeUrlOrName}"`, {
        typeUrl: typeUrlOrName,
      });
    }
    return type;
  }

  /** Encodes a plain object (see {@link MessageInit}) to protobuf bytes. */
  encode<K extends string>(typeUrlOrName: K, value: MessageInit<MessageOf<K>>): Uint8Array {
    const type = this.require(typeUrlOrName);
    try {
      return type.encode(type.fromObject(value as Record<string, unknown>)).finish();
    } catch (cause) {
      throw new XdsError("ERR_XDS_ENCODE", `cannot encode ${type.fullName.slice(1)}: ${String(cause)}`, {
        cause,
        typeUrl: typeUrlOrName,
      });
    }
  }

  /** Decodes protobuf bytes into the plain wire shape (lowerCamelCase, enums as names, bytes as Buffer). */
  decode<K extends string>(typeUrlOrName: K, bytes: Uint8Array): MessageOf<K> {
    const type = this.require(typeUrlOrName);
    let message: protobuf.Message;
    try {
      // A plain Uint8Array selects protobufjs's strict reader (its Buffer reader clamps truncated strings).
      const view = Buffer.isBuffer(bytes)
        ? new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength)
        : bytes;
      message = type.decode(view);
    } catch (cause) {
      throw new XdsError("ERR_XDS_DECODE", `cannot decode ${type.fullName.slice(1)}: ${String(cause)}`, {
        cause,
        typeUrl: typeUrlOrName,
      });
    }
    return messageToPlain(type, message as unknown as Record<string, unknown>) as MessageOf<K>;
  }

  /** Packs a message into an `Any` with a `type.googleapis.com/` URL. */
  pack<K extends string>(typeUrlOrName: K, value: MessageInit<MessageOf<K>>): AnyMessage {
    const name = messageNameOf(typeUrlOrName);
    return {
      typeUrl: `${TYPE_URL_PREFIX}${name}`,
      value: this.encode(typeUrlOrName as string, value as never),
    };
  }

  /** Decodes the payload of an `Any` by its type URL. */
  unpack(any: AnyMessage): unknown {
    if (typeof any?.typeUrl !== "string" || !(any.value instanceof Uint8Array)) {
      throw new XdsError("ERR_XDS_DECODE", "malformed Any: typeUrl and value are required");
    }
    return this.decode(any.typeUrl, any.value);
  }
}

/** The shared registry of all messages in this package. */
export const typeRegistry: TypeRegistry = new TypeRegistry();
