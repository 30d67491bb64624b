// `ambient ztunnel-config`: tables from the ztunnels' admin `/config_dump`, as `istioctl
// ztunnel-config` shows them. Only what the dump holds is shown; nothing is inferred.
import { request } from "node:http";
import { isIP } from "node:net";
import { CliError, checkedTimeoutMs } from "./errors.js";
import type { Table } from "./output.js";

/** The sections `ztunnel-config` can show, each a key of `/config_dump`. */
export type ZtunnelConfigSection = "workloads" | "services" | "policies" | "certificates" | "connections";

export const ZTUNNEL_CONFIG_SECTIONS: readonly ZtunnelConfigSection[] = [
  "workloads",
  "services",
  "policies",
  "certificates",
  "connections",
];

/** The local demo mesh's ztunnel admin endpoints (node-a, node-b); ztunnel `ADMIN_PORT` 15000. */
export const DEFAULT_ADMIN_ADDRESSES: readonly string[] = ["127.20.0.1:15000", "127.20.0.2:15000"];

/** Options of {@link ztunnelConfig}. */
export interface ZtunnelConfigOptions {
  /** Admin endpoints (`ip:port`) to ask. Default {@link DEFAULT_ADMIN_ADDRESSES}. */
  admins?: readonly string[];
  /** Only the ztunnel serving this node, and for `workloads` only the workloads on it. */
  node?: string;
  /** Per-request deadline. Default 5000 ms. */
  timeoutMs?: number;
}

/** One ztunnel's dump, as fetched. */
export interface FetchedConfigDump {
  admin: string;
  /** Node name from the dump's `node.name` (empty when the dump has none). */
  node: string;
  dump: Record<string, unknown>;
}

/** What {@link ztunnelConfig} found. */
export interface ZtunnelConfigResult {
  section: ZtunnelConfigSection;
  /** The section's entries as the dump holds them; per-node sections get a `node` field. */
  items: Record<string, unknown>[];
  table: Table;
  /** Admin endpoints that did not answer while others did (one line each). */
  warnings: string[];
}

/** Largest `/config_dump` accepted. */
const MAX_DUMP_BYTES = 32 * 1024 * 1024;

/** Splits `ip:port` (`[v6]:port` for IPv6); only canonical IP addresses are accepted, never names. */
export function parseAdminAddress(text: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const host = match?.[1] ?? match?.[2];
  const port = Number(match?.[3]);
  if (match === null || host === undefined || isIP(host) === 0 || !(port >= 1 && port <= 65535)) {
    throw new CliError(
      "ERR_CLI_USAGE",
      `admin address "${text}" is not ip:port: pass --admin like 127.20.0.1:15000 (IPv6 as [::1]:15000)`,
    );
  }
  if (match[1] !== undefined && isIP(host) !== 6) {
    throw new CliError("ERR_CLI_USAGE", `admin address "${text}": brackets are for IPv6 only`);
  }
  return { host, port };
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** GETs `http://<admin>/config_dump` and parses it. */
export function fetchConfigDump(admin: string, timeoutMs = 5000): Promise<FetchedConfigDump> {
  const { host, port } = parseAdminAddress(admin);
  checkedTimeoutMs(timeoutMs, "fetchConfigDump");
  const what = `the ztunnel admin at ${admin}`;
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path: "/config_dump", method: "GET", timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      let size = 0;
      res.on("data", (chunk: Buffer) => {
        size += chunk.length;
        if (size > MAX_DUMP_BYTES) {
          req.destroy();
          reject(new CliError("ERR_ADMIN_RESPONSE", `${what} sent more than ${MAX_DUMP_BYTES} bytes`));
          return;
        }
        chunks.push(chunk);
      });
      res.on("error", (cause) =>
        reject(new CliError("ERR_ADMIN_UNREACHABLE", `${what} broke off its answer: try again`, { cause })),
      );
      res.on("end", () => {
        if (res.statusCode !== 200) {
          reject(
            new CliError(
              "ERR_ADMIN_RESPONSE",
              `${what} answered HTTP ${res.statusCode} to /config_dump: is ${admin} a ztunnel admin port (15000)?`,
            ),
          );
          return;
        }
        let dump: unknown;
        try {
          dump = JSON.parse(Buffer.concat(chunks).toString("utf8"));
        } catch (cause) {
          reject(
            new CliError("ERR_ADMIN_RESPONSE", `${what} sent a /config_dump that is not JSON`, { cause }),
          );
          return;
        }
        if (!isRecord(dump)) {
          reject(new CliError("ERR_ADMIN_RESPONSE", `${what} sent a /config_dump that is not a JSON object`));
          return;
        }
        const node = isRecord(dump.node) && typeof dump.node.name === "string" ? dump.node.name : "";
        resolve({ admin, node, dump });
      });
    });
    req.on("timeout", () => {
      req.destroy(new Error(`no answer within ${timeoutMs} ms`));
    });
    // The socket's timeout is for silence; an answer that trickles in has the whole call's deadline.
    const deadline = setTimeout(
      () => req.destroy(new Error(`no whole answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on("close", () => clearTimeout(deadline));
    req.on("error", (cause) => {
      const reason = (cause as NodeJS.ErrnoException).code ?? cause.message;
      reject(
        new CliError(
          "ERR_ADMIN_UNREACHABLE",
          `cannot reach ${what} (${reason}): start the mesh (pnpm demo --keep-running) or pass --admin <ip:port>`,
          { cause },
        ),
      );
    });
    req.end();
  });
}

function text(value: unknown): string {
  if (value === undefined || value === null || value === "") return "";
  return typeof value === "string"
    ? value
    : typeof value === "number" || typeof value === "boolean"
      ? String(value)
      : JSON.stringify(value);
}

/** IP text of a `NetworkAddress` (`{ network, address }`) or a bare string. */
function addressText(value: unknown): string {
  if (typeof value === "string") return value;
  if (isRecord(value)) return text(value.address);
  return "";
}

/** The waypoint a workload or service names, by the name of the workload or service at its address. */
function waypointName(value: unknown, dump: Record<string, unknown>): string {
  if (!isRecord(value)) return "None";
  if (isRecord(value.hostname)) return text(value.hostname.hostname) || "None";
  const ip = addressText(value.address);
  if (ip === "") return "None";
  const workloads = Array.isArray(dump.workloads) ? dump.workloads : [];
  for (const w of workloads) {
    if (isRecord(w) && Array.isArray(w.addresses) && w.addresses.includes(ip)) return text(w.name) || ip;
  }
  const services = Array.isArray(dump.services) ? dump.services : [];
  for (const s of services) {
    if (isRecord(s) && Array.isArray(s.addresses) && s.addresses.some((a) => addressText(a) === ip))
      return text(s.name) || ip;
  }
  return ip;
}

function sectionOf(fetched: FetchedConfigDump, section: ZtunnelConfigSection): Record<string, unknown>[] {
  const value = fetched.dump[section];
  if (!Array.isArray(value)) {
    throw new CliError(
      "ERR_NOT_IN_CONFIG_DUMP",
      `the /config_dump of the ztunnel at ${fetched.admin} has no "${section}" list, so it cannot be shown: this ztunnel does not report ${section}`,
    );
  }
  return value.filter(isRecord);
}

/** Builds the rows of one section from the dumps (mesh-wide sections are deduplicated). */
export function sectionTable(
  section: ZtunnelConfigSection,
  dumps: readonly FetchedConfigDump[],
  options: { node?: string; now?: Date } = {},
): { items: Record<string, unknown>[]; table: Table } {
  const items: Record<string, unknown>[] = [];
  const rows: string[][] = [];
  const seen = new Set<string>();
  const firstTime = (key: string): boolean => {
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  };
  for (const fetched of dumps) {
    const entries = sectionOf(fetched, section);
    for (const e of entries) {
      switch (section) {
        case "workloads": {
          if (options.node !== undefined && e.node !== options.node) break;
          if (!firstTime(text(e.uid) || `${text(e.namespace)}/${text(e.name)}`)) break;
          items.push(e);
          const addresses = Array.isArray(e.addresses) ? e.addresses.map(addressText).join(",") : "";
          rows.push([
            text(e.namespace),
            text(e.name),
            addresses,
            text(e.node),
            waypointName(e.waypoint, fetched.dump),
            text(e.tunnelProtocol),
          ]);
          break;
        }
        case "services": {
          const key = `${text(e.namespace)}/${text(e.hostname)}`;
          if (!firstTime(key)) break;
          items.push(e);
          const workloads = Array.isArray(fetched.dump.workloads) ? fetched.dump.workloads : [];
          const endpoints = workloads.filter(
            (w) => isRecord(w) && isRecord(w.services) && key in w.services,
          ).length;
          const vips = Array.isArray(e.addresses) ? e.addresses.map(addressText).join(",") : "";
          rows.push([
            text(e.namespace),
            text(e.name),
            vips,
            waypointName(e.waypoint, fetched.dump),
            String(endpoints),
          ]);
          break;
        }
        case "policies": {
          if (!firstTime(`${text(e.namespace)}/${text(e.name)}`)) break;
          items.push(e);
          rows.push([
            text(e.namespace),
            text(e.name),
            `${text(e.action)}${e.dryRun === true ? " (dry-run)" : ""}`,
            text(e.scope),
          ]);
          break;
        }
        case "certificates": {
          items.push({ node: fetched.node, ...e });
          const notAfter = Date.parse(text(e.notAfter));
          const now = (options.now ?? new Date()).getTime();
          const status = Number.isNaN(notAfter) ? "Unknown" : notAfter > now ? "Valid" : "Expired";
          rows.push([fetched.node, text(e.identity), text(e.notAfter), status]);
          break;
        }
        case "connections": {
          items.push({ node: fetched.node, ...e });
          rows.push([
            fetched.node,
            text(e.direction),
            text(e.source),
            text(e.sourceIdentity),
            text(e.destination),
            text(e.destinationIdentity),
          ]);
          break;
        }
      }
    }
  }
  return { items, table: { columns: COLUMNS[section], rows } };
}

const COLUMNS: Record<ZtunnelConfigSection, string[]> = {
  workloads: ["NAMESPACE", "POD NAME", "ADDRESS", "NODE", "WAYPOINT", "PROTOCOL"],
  services: ["NAMESPACE", "SERVICE NAME", "SERVICE VIP", "WAYPOINT", "ENDPOINTS"],
  policies: ["NAMESPACE", "POLICY NAME", "ACTION", "SCOPE"],
  certificates: ["NODE", "IDENTITY", "NOT AFTER", "STATUS"],
  connections: ["NODE", "DIRECTION", "SOURCE", "SOURCE IDENTITY", "DESTINATION", "DESTINATION IDENTITY"],
};

/**
 * Fetches `/config_dump` from every admin endpoint (default {@link DEFAULT_ADMIN_ADDRESSES}). An
 * endpoint that fails is a warning while another answers; when none does, its error is thrown.
 */
export async function fetchConfigDumps(
  admins: readonly string[] | undefined,
  timeoutMs?: number,
): Promise<{ dumps: FetchedConfigDump[]; warnings: string[] }> {
  const list = admins !== undefined && admins.length > 0 ? admins : DEFAULT_ADMIN_ADDRESSES;
  for (const a of list) parseAdminAddress(a);
  const settled = await Promise.allSettled(list.map((a) => fetchConfigDump(a, timeoutMs)));
  const dumps: FetchedConfigDump[] = [];
  const failures: Error[] = [];
  for (const s of settled) {
    if (s.status === "fulfilled") dumps.push(s.value);
    else failures.push(s.reason instanceof Error ? s.reason : new Error(String(s.reason)));
  }
  if (dumps.length === 0)
    throw failures[0] ?? new CliError("ERR_ADMIN_UNREACHABLE", "no admin address given");
  return { dumps, warnings: failures.map((f) => f.message) };
}

/**
 * Fetches `/config_dump` from every admin endpoint and returns one section as items and a table.
 * Workloads, services and policies are the mesh-wide state every ztunnel holds, so they are listed
 * once; certificates and connections belong to a node and carry its name. An unreachable endpoint is
 * a warning while another answers, and an error when none does.
 */
export async function ztunnelConfig(
  section: ZtunnelConfigSection,
  options: ZtunnelConfigOptions = {},
): Promise<ZtunnelConfigResult> {
  if (!ZTUNNEL_CONFIG_SECTIONS.includes(section)) {
    throw new CliError(
      "ERR_CLI_USAGE",
      `unknown section "${section}": use one of ${ZTUNNEL_CONFIG_SECTIONS.join(", ")}`,
    );
  }
  const { dumps, warnings } = await fetchConfigDumps(options.admins, options.timeoutMs);
  let selected = dumps;
  if (options.node !== undefined) {
    selected = dumps.filter((d) => d.node === options.node);
    if (selected.length === 0) {
      const known = dumps.map((d) => `${d.node || "?"} (${d.admin})`).join(", ");
      throw new CliError(
        "ERR_NODE_NOT_FOUND",
        `no ztunnel serves node "${options.node}" among ${known}: pass --admin <ip:port> of that node's ztunnel`,
      );
    }
  }
  const sectionOptions: { node?: string } = {};
  if (options.node !== undefined) sectionOptions.node = options.node;
  const { items, table } = sectionTable(section, selected, sectionOptions);
  return { section, items, table, warnings };
}
