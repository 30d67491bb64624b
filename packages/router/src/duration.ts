import { RouterError } from "./errors.js";

const DURATION = /^([0-9]{1,5}(h|m|s|ms)){1,4}$/;
const PART = /([0-9]{1,5})(h|ms|m|s)/g;
const UNIT_MS: Record<string, number> = { h: 3_600_000, m: 60_000, s: 1000, ms: 1 };

/**
 * Parses a Gateway API duration (GEP-2257: up to four `<1-5 digits><h|m|s|ms>` parts, e.g. `"1h30m"`,
 * `"250ms"`) into milliseconds. `"0s"` parses to 0, which callers read as "disabled".
 */
export function parseGatewayDuration(text: string, field: string): number {
  if (typeof text !== "string" || !DURATION.test(text)) {
    throw new RouterError(
      "ERR_ROUTE_INVALID",
      `${field}: ${JSON.stringify(text)} is not a Gateway API duration (e.g. "10s", "1m30s", "500ms")`,
      { field },
    );
  }
  let total = 0;
  for (const m of text.matchAll(PART)) total += Number(m[1]) * (UNIT_MS[m[2] ?? "s"] ?? 0);
  return total;
}
