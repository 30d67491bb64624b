import { XdsError } from "./errors.js";
import type { google } from "./gen/types.js";

/** JSON value as carried by `google.protobuf.Struct`. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

function valueFromJson(value: JsonValue): google.protobuf.Value {
  if (value === null) return { nullValue: "NULL_VALUE" };
  if (typeof value === "boolean") return { boolValue: value };
  if (typeof value === "number") return { numberValue: value };
  if (typeof value === "string") return { stringValue: value };
  if (Array.isArray(value)) return { listValue: { values: value.map(valueFromJson) } };
  if (typeof value === "object") return { structValue: structFromJson(value) };
  throw new XdsError("ERR_XDS_INVALID_ARGUMENT", `not a JSON value: ${typeof value}`);
}

function valueToJson(value: google.protobuf.Value | undefined): JsonValue {
  if (value === undefined) return null;
  if (value.boolValue !== undefined) return value.boolValue;
  if (value.numberValue !== undefined) return value.numberValue;
  if (value.stringValue !== undefined) return value.stringValue;
  if (value.listValue !== undefined) return (value.listValue.values ?? []).map(valueToJson);
  if (value.structValue !== undefined) return structToJson(value.structValue);
  return null;
}

/**
 * Converts a JSON object to `google.protobuf.Struct` (for `Node.metadata`).
 * @throws XdsError `ERR_XDS_INVALID_ARGUMENT` when `json` is not an object of JSON values.
 */
export function structFromJson(json: { [key: string]: JsonValue }): google.protobuf.Struct {
  if (json === null || typeof json !== "object" || Array.isArray(json)) {
    throw new XdsError(
      "ERR_XDS_INVALID_ARGUMENT",
      `a Struct is made from a JSON object, got ${Array.isArray(json) ? "an array" : String(json)}`,
    );
  }
  const fields: Record<string, google.protobuf.Value> = {};
  for (const [k, v] of Object.entries(json)) fields[k] = valueFromJson(v);
  return { fields };
}

/** Converts a `google.protobuf.Struct` back to JSON. */
export function structToJson(struct: { fields?: Record<string, google.protobuf.Value> } | undefined): {
  [key: string]: JsonValue;
} {
  const out: { [key: string]: JsonValue } = {};
  for (const [k, v] of Object.entries(struct?.fields ?? {})) out[k] = valueToJson(v);
  return out;
}
