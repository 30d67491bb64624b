/**
 * JSON for the admin endpoints. Workloads, Services and policies carry addresses as bytes
 * (`Uint8Array` or `Buffer`, which `JSON.stringify` would print as `{"type":"Buffer","data":[…]}` or
 * `{"0":127,…}`): every byte field named `address` or `addresses` is written as IP text, and any
 * other byte field as base64, so no byte array ever reaches the output.
 */
import { ipFromBytes } from "./workload-store.js";

const ADDRESS_KEYS = new Set(["address", "addresses"]);

/** A copy of `value` fit for `JSON.stringify`: bytes as text, Maps as objects. */
export function adminJsonView(value: unknown, key = ""): unknown {
  if (value instanceof Uint8Array) {
    const ip = ADDRESS_KEYS.has(key) ? ipFromBytes(value) : undefined;
    return ip ?? Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64");
  }
  if (Array.isArray(value)) return value.map((item) => adminJsonView(item, key));
  if (value instanceof Map) {
    return Object.fromEntries([...value].map(([k, v]) => [String(k), adminJsonView(v, String(k))]));
  }
  if (value !== null && typeof value === "object") {
    if (typeof (value as { toJSON?: unknown }).toJSON === "function") return value;
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(value)) out[k] = adminJsonView(v, k);
    return out;
  }
  return value;
}

/** `JSON.stringify` of {@link adminJsonView}, indented. */
export function adminJson(value: unknown): string {
  return JSON.stringify(adminJsonView(value), null, 2);
}
