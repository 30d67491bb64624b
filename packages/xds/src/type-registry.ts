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
  /**
   * `ambient.waypoint.v1.WaypointPolicy`: an AuthorizationPolicy or RequestAuthentication for
   * waypoints, its spec carried as written (this package's own type; Istio compiles these into
   * Envoy filters instead).
   */
  waypointPolicy: "type.googleapis.com/ambient.waypoint.v1.WaypointPolicy",
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

/** Converts one decoded value of a field to the wire shape; undefined when the value is kept as is. */
type Convert = ((value: unknown) => unknown) | undefined;

function bytesToBuffer(value: unknown): Buffer {
  if (!(value instanceof Uint8Array)) return Buffer.alloc(0);
  return Buffer.isBuffer(value) ? value : Buffer.from(value.buffer, value.byteOffset, value.byteLength);
}

function converterOf(field: protobuf.Field): Convert {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) {
    return (value) => plainConverterOf(resolved)(value as Record<string, unknown>);
  }
  if (resolved instanceof protobuf.Enum) {
    const names = resolved.valuesById;
    return (value) => (typeof value === "number" ? (names[value] ?? value) : value);
  }
  if (LONG_TYPES.has(field.type)) return toNumber;
  if (field.type === "bytes") return bytesToBuffer;
  return undefined;
}

type PlainConverter = (message: Record<string, unknown>) => Record<string, unknown>;
const plainConverters = new WeakMap<protobuf.Type, PlainConverter>();

function mapToPlain(value: unknown, convert: Convert): Record<string, unknown> {
  const map: Record<string, unknown> = {};
  if (value === null || value === undefined) return map;
  for (const [k, v] of Object.entries(value as Record<string, unknown>))
    map[k] = convert === undefined ? v : convert(v);
  return map;
}

/**
 * The converter from a decoded protobufjs message of `type` to a plain object in the package's wire
 * shape, generated once per type (as protobufjs generates its decoders): each field read and written
 * by its constant name, in field order, so every object of a type gets one hidden class and the
 * conversion does no per-field lookups. A field's value is converted only where its type needs it
 * (messages, enums, 64-bit integers, bytes).
 */
function plainConverterOf(type: protobuf.Type): PlainConverter {
  const known = plainConverters.get(type);
  if (known !== undefined) return known;
  let generated: PlainConverter | undefined;
  // Generated on first use: the field types are resolved by then, including types that refer to themselves.
  const convert: PlainConverter = (message) => {
    generated ??= generateConverter(type);
    return generated(message);
  };
  plainConverters.set(type, convert);
  return convert;
}

function generateConverter(type: protobuf.Type): PlainConverter {
  const converters: Convert[] = [];
  const defaults: unknown[] = [];
  const lines = ["var o = {}, v;"];
  for (const field of type.fieldsArray) {
    const i = converters.length;
    const convert = converterOf(field);
    converters.push(convert);
    defaults.push(field.typeDefault);
    const key = JSON.stringify(field.name);
    const apply = (x: string) => (convert === undefined ? x : `c[${i}](${x})`);
    const present = `(v !== null && v !== undefined && h(m, ${key}))`;
    lines.push(`v = m[${key}];`);
    if (field.map) {
      lines.push(`o[${key}] = p(${present} ? v : undefined, c[${i}]);`);
    } else if (field.repeated) {
      lines.push(
        `o[${key}] = Array.isArray(v) ? ${convert === undefined ? "v.slice()" : `v.map(c[${i}])`} : [];`,
      );
    } else if (field.partOf || field.resolvedType instanceof protobuf.Type) {
      // A message field or a oneof member is set only when present.
      lines.push(`if ${present} o[${key}] = ${apply("v")};`);
    } else {
      lines.push(`o[${key}] = ${apply(`${present} ? v : d[${i}]`)};`);
    }
  }
  lines.push("return o;");
  // Array.prototype.map passes (value, index, array): the converters take the value alone.
  const unary = converters.map((c) => (c === undefined ? undefined : (v: unknown) => c(v)));
  const factory = new Function(
    "c",
    "d",
    "h",
    "p",
    `"use strict"; return function (m) {\n${lines.join("\n")}\n};`,
  );
  return factory(unary, defaults, Object.hasOwn, mapToPlain) as PlainConverter;
}

/**
 * Why a value cannot be encoded: which field, in which message, and what is wrong. The path is
 * collected leaf first while the check unwinds, so a value that passes builds no strings.
 */
class FieldProblem {
  /** Path segments, innermost first: `["source_ips", "matches[0]", ...]`. */
  readonly segments: string[];
  constructor(
    readonly code: "ERR_XDS_UNKNOWN_FIELD" | "ERR_XDS_ENCODE",
    segment: string | undefined,
    readonly messageType: string,
    readonly reason: string,
  ) {
    this.segments = segment === undefined ? [] : [segment];
  }
  /** Adds the enclosing segment (a field name, or an index or map key for the last one added). */
  within(segment: string, index?: string): FieldProblem {
    if (index !== undefined) {
      const inner = this.segments.pop();
      this.segments.push(inner === undefined ? `${segment}${index}` : `${segment}${index}.${inner}`);
    } else {
      const inner = this.segments.pop();
      this.segments.push(inner === undefined ? segment : `${segment}.${inner}`);
    }
    return this;
  }
  get field(): string {
    return this.segments.join(".");
  }
}

const INT32_TYPES = new Set(["int32", "sint32", "sfixed32"]);
const UINT32_TYPES = new Set(["uint32", "fixed32"]);

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return (
    typeof value === "object" && value !== null && !Array.isArray(value) && !(value instanceof Uint8Array)
  );
}

function lowerCamel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (value instanceof Uint8Array) return "bytes";
  return typeof value === "object" ? "an object" : `${typeof value} ${JSON.stringify(value)}`;
}

/**
 * Checks a plain object against a message type before protobufjs sees it: protobufjs' `fromObject`
 * drops keys it does not know and coerces wrong values to defaults, so a policy written with another
 * copy's field names (snake_case, `rules[].clauses[]`) would encode as an empty one. Every key must be
 * a lowerCamelCase field of the message (as decoded objects have them), at most one member per oneof,
 * and each value must have the field's kind; nested messages, repeated fields, maps and `Any` (also in
 * protobufjs' `{ "@type": ... }` form) are checked too. Returns the first problem found.
 */
function checkMessage(type: protobuf.Type, value: unknown, depth: number): FieldProblem | undefined {
  if (value instanceof protobuf.Message) return undefined;
  if (!isPlainObject(value)) {
    return new FieldProblem(
      "ERR_XDS_ENCODE",
      undefined,
      type.fullName.slice(1),
      `expected an object, got ${describe(value)}`,
    );
  }
  if (depth > 100)
    return new FieldProblem("ERR_XDS_ENCODE", undefined, type.fullName.slice(1), "nesting is too deep");
  // (`fullName` is computed on each read: test the cheap `name` first.)
  if (value["@type"] !== undefined && type.name === "Any" && type.fullName === ".google.protobuf.Any") {
    const url = value["@type"];
    let inner: protobuf.Type | undefined;
    try {
      inner = typeof url === "string" ? type.root.lookupType(messageNameOf(url)) : undefined;
    } catch {
      inner = undefined;
    }
    if (inner === undefined) {
      return new FieldProblem(
        "ERR_XDS_ENCODE",
        "@type",
        "google.protobuf.Any",
        `unknown type ${JSON.stringify(url)}`,
      );
    }
    const { "@type": _, ...rest } = value;
    return checkMessage(inner, rest, depth + 1);
  }
  for (const key in value) {
    if (!Object.hasOwn(value, key)) continue;
    const field = type.fields[key];
    if (field === undefined) {
      const camel = lowerCamel(key);
      const hint =
        camel !== key && type.fields[camel] !== undefined
          ? ` (field names are lowerCamelCase: "${camel}")`
          : type.oneofs?.[key] !== undefined
            ? ` (a oneof: set one of ${type.oneofs[key]?.oneof.join(", ")})`
            : "";
      return new FieldProblem(
        "ERR_XDS_UNKNOWN_FIELD",
        key,
        type.fullName.slice(1),
        `unknown field "${key}"${hint}`,
      );
    }
    const v = value[key];
    if (v === undefined || v === null) continue;
    if (field.map) {
      if (!isPlainObject(v)) {
        return new FieldProblem(
          "ERR_XDS_ENCODE",
          key,
          type.fullName.slice(1),
          `expected a map object, got ${describe(v)}`,
        );
      }
      for (const k in v) {
        if (!Object.hasOwn(v, k)) continue;
        const problem = checkValue(field, v[k], type, depth);
        if (problem) return problem.within(key, `[${JSON.stringify(k)}]`);
      }
    } else if (field.repeated) {
      if (!Array.isArray(v)) {
        return new FieldProblem(
          "ERR_XDS_ENCODE",
          key,
          type.fullName.slice(1),
          `expected an array, got ${describe(v)}`,
        );
      }
      for (let i = 0; i < v.length; i++) {
        const problem = checkValue(field, v[i], type, depth);
        if (problem) return problem.within(key, `[${i}]`);
      }
    } else {
      const problem = checkValue(field, v, type, depth);
      if (problem) return problem.within(key);
    }
  }
  for (const oneof of type.oneofsArray) {
    let set = 0;
    for (const name of oneof.oneof) {
      if (value[name] !== undefined && value[name] !== null) set++;
    }
    if (set > 1) {
      const members = oneof.oneof.filter((name) => value[name] !== undefined && value[name] !== null);
      return new FieldProblem(
        "ERR_XDS_ENCODE",
        members[1],
        type.fullName.slice(1),
        `oneof ${oneof.name} has more than one member set: ${members.join(", ")}`,
      );
    }
  }
  return undefined;
}

/** Checks one value (a list item or map value too) of `field` of `parent`. */
function checkValue(
  field: protobuf.Field,
  value: unknown,
  parent: protobuf.Type,
  depth: number,
): FieldProblem | undefined {
  const resolved = field.resolvedType;
  if (resolved instanceof protobuf.Type) return checkMessage(resolved, value, depth + 1);
  const bad = (expected: string) =>
    new FieldProblem(
      "ERR_XDS_ENCODE",
      undefined,
      parent.fullName.slice(1),
      `expected ${expected}, got ${describe(value)}`,
    );
  if (resolved instanceof protobuf.Enum) {
    if (typeof value === "string") {
      return Object.hasOwn(resolved.values, value)
        ? undefined
        : bad(`one of ${Object.keys(resolved.values).join(", ")} (${resolved.fullName.slice(1)})`);
    }
    return Number.isInteger(value)
      ? undefined
      : bad(`an enum name or number (${resolved.fullName.slice(1)})`);
  }
  switch (field.type) {
    case "string":
      return typeof value === "string" ? undefined : bad("a string");
    case "bool":
      return typeof value === "boolean" ? undefined : bad("a boolean");
    case "double":
    case "float":
      return typeof value === "number" ? undefined : bad("a number");
    case "bytes":
      return value instanceof Uint8Array || typeof value === "string" ? undefined : bad("bytes");
  }
  if (INT32_TYPES.has(field.type)) {
    const ok = Number.isInteger(value) && (value as number) >= -(2 ** 31) && (value as number) < 2 ** 31;
    return ok ? undefined : bad("a 32-bit integer");
  }
  if (UINT32_TYPES.has(field.type)) {
    const ok = Number.isInteger(value) && (value as number) >= 0 && (value as number) < 2 ** 32;
    return ok ? undefined : bad("an unsigned 32-bit integer");
  }
  if (LONG_TYPES.has(field.type)) {
    const ok =
      Number.isSafeInteger(value) ||
      (typeof value === "string" && /^-?\d{1,20}$/.test(value)) ||
      (isPlainObject(value) && typeof value.low === "number" && typeof value.high === "number");
    return ok ? undefined : bad("a 64-bit integer (safe integer number or decimal string)");
  }
  return undefined;
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
    if (typeof typeUrlOrName !== "string") return undefined;
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
      throw new XdsError("ERR_XDS_UNKNOWN_TYPE", `unknown message type "${String(typeUrlOrName)}"`, {
        typeUrl: typeUrlOrName,
      });
    }
    return type;
  }

  /**
   * Encodes a plain object (see {@link MessageInit}) to protobuf bytes.
   * @throws XdsError `ERR_XDS_UNKNOWN_FIELD` for a key the message does not have (field names are
   *   lowerCamelCase, as decoded), `ERR_XDS_ENCODE` for a value of the wrong kind (an unknown enum
   *   name, a string for a number, two members of one oneof, ...); `field` and `messageType` say where.
   */
  encode<K extends string>(typeUrlOrName: K, value: MessageInit<MessageOf<K>>): Uint8Array {
    const type = this.require(typeUrlOrName);
    const problem = checkMessage(type, value, 0);
    if (problem !== undefined) {
      const where = problem.field === "" ? "" : ` at ${problem.field}`;
      throw new XdsError(
        problem.code,
        `cannot encode ${type.fullName.slice(1)}: ${problem.reason} in ${problem.messageType}${where}`,
        { typeUrl: typeUrlOrName, field: problem.field, messageType: problem.messageType },
      );
    }
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
    return plainConverterOf(type)(message as unknown as Record<string, unknown>) as MessageOf<K>;
  }

  /** Packs a message into an `Any` with a `type.googleapis.com/` URL. */
  pack<K extends string>(typeUrlOrName: K, value: MessageInit<MessageOf<K>>): AnyMessage {
    this.require(typeUrlOrName);
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
