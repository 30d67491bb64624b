// resolv.conf(5), read the way the C library reads it, so a DNS proxy forwards where the host's own
// resolver would have asked.
import { readFile } from "node:fs/promises";
import { isIP } from "node:net";
import { toDnsError } from "./node-error.js";

/** What resolv.conf says about where and how to resolve. */
export interface ResolvConf {
  /** `nameserver` lines in order, IP literals only, at most 3 (the C library's MAXNS). */
  readonly nameservers: readonly string[];
  /** The last `search` or `domain` line's domains, trailing dots removed. */
  readonly search: readonly string[];
  /** `options ndots:n`, default 1, at most 15. */
  readonly ndots: number;
  /** `options timeout:n` in seconds (at most 30), if given. */
  readonly timeoutSeconds?: number;
  /** `options attempts:n` (at most 5), if given. */
  readonly attempts?: number;
}

const MAX_NAMESERVERS = 3;

function optionValue(value: string, max: number): number | undefined {
  if (!/^[0-9]+$/.test(value)) return undefined;
  return Math.min(Number(value), max);
}

/**
 * Parses resolv.conf text: `nameserver`, `search` and `domain` (the last of those two wins),
 * `options ndots:/timeout:/attempts:`; `#` and `;` start comments; unknown lines and malformed
 * values are skipped, as the C library skips them. No `nameserver` line gives an empty list: the
 * caller picks the fallback (the C library uses the local host).
 */
export function parseResolvConf(text: string): ResolvConf {
  const nameservers: string[] = [];
  let search: string[] = [];
  let ndots = 1;
  let timeoutSeconds: number | undefined;
  let attempts: number | undefined;
  for (const rawLine of text.split(/\r?\n/)) {
    const line = rawLine.replace(/[#;].*$/, "").trim();
    const [keyword, ...args] = line.split(/\s+/);
    if (keyword === "nameserver") {
      const address = args[0];
      if (address !== undefined && isIP(address) !== 0 && nameservers.length < MAX_NAMESERVERS) {
        nameservers.push(address);
      }
    } else if (keyword === "search" || keyword === "domain") {
      const domains = (keyword === "domain" ? args.slice(0, 1) : args)
        .map((domain) => (domain.length > 1 ? domain.replace(/\.$/, "") : domain))
        .filter((domain) => domain !== "" && domain !== ".");
      search = domains;
    } else if (keyword === "options") {
      for (const option of args) {
        const [name, value = ""] = option.split(":", 2) as [string, string?];
        if (name === "ndots") ndots = optionValue(value, 15) ?? ndots;
        else if (name === "timeout") timeoutSeconds = optionValue(value, 30) ?? timeoutSeconds;
        else if (name === "attempts") attempts = optionValue(value, 5) ?? attempts;
      }
    }
  }
  return {
    nameservers,
    search,
    ndots,
    ...(timeoutSeconds === undefined ? {} : { timeoutSeconds }),
    ...(attempts === undefined ? {} : { attempts }),
  };
}

/** Reads and parses a resolv.conf file; rejects with `ERR_DNS_RESOLV_CONF` (errno in `details.errno`) if it cannot be read. */
export async function readResolvConf(path = "/etc/resolv.conf"): Promise<ResolvConf> {
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (err) {
    throw toDnsError(err, "ERR_DNS_RESOLV_CONF", `cannot read ${path}`);
  }
  return parseResolvConf(text);
}
