// `ambient dashboard`: finds the live mesh page on the control plane's admin port, checks that it
// answers, prints its address and, when a person is at a terminal, opens it with xdg-open.
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { request } from "node:http";
import { delimiter, join } from "node:path";
import { CliError, checkedTimeoutMs } from "./errors.js";
import { parseAdminAddress } from "./ztunnel-config.js";

/** The control plane admin address of the local mesh (`pnpm demo --keep-running`); istiod's 15014. */
export const DEFAULT_CONTROL_PLANE_ADMIN = "127.0.0.1:15014";

/** What the page's data says about the mesh, for a one-line summary. */
export interface DashboardInfo {
  url: string;
  workloads: number;
  edges: number;
  proxies: { kind: string; name: string; up: boolean }[];
}

function getJson(
  host: string,
  port: number,
  path: string,
  timeoutMs: number,
  what: string,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method: "GET", timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        if (res.statusCode !== 200) {
          reject(
            new CliError(
              "ERR_ADMIN_RESPONSE",
              `${what} answered ${res.statusCode} for ${path}: is it a control plane with the live mesh page?`,
            ),
          );
          return;
        }
        try {
          resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
        } catch (cause) {
          reject(
            new CliError("ERR_ADMIN_RESPONSE", `${what} answered ${path} with something that is not JSON`, {
              cause,
            }),
          );
        }
      });
      res.on("error", (cause) =>
        reject(new CliError("ERR_ADMIN_UNREACHABLE", `${what} broke off: ${cause.message}`)),
      );
    });
    req.on("timeout", () => req.destroy(new Error(`no answer in ${timeoutMs} ms`)));
    // The socket's timeout is for silence; an answer that trickles in has the whole call's deadline.
    const deadline = setTimeout(
      () => req.destroy(new Error(`no whole answer in ${timeoutMs} ms`)),
      timeoutMs,
    );
    req.on("close", () => clearTimeout(deadline));
    req.on("error", (cause) =>
      reject(
        new CliError(
          "ERR_ADMIN_UNREACHABLE",
          `${what} did not answer (${cause.message}): start the mesh with \`pnpm demo --keep-running\` or pass --admin`,
          { cause },
        ),
      ),
    );
    req.end();
  });
}

/** Checks that the page's data answers at `admin` and returns the page's URL with a summary. */
export async function dashboardInfo(
  admin: string = DEFAULT_CONTROL_PLANE_ADMIN,
  timeoutMs = 5000,
): Promise<DashboardInfo> {
  const { host, port } = parseAdminAddress(admin);
  checkedTimeoutMs(timeoutMs, "dashboardInfo");
  const hostText = host.includes(":") ? `[${host}]` : host;
  const what = `the control plane admin at ${admin}`;
  const data = await getJson(host, port, "/dashboard/data", timeoutMs, what);
  const record = (data ?? {}) as Record<string, unknown>;
  if (!Array.isArray(record.workloads) || !Array.isArray(record.proxies)) {
    throw new CliError(
      "ERR_ADMIN_RESPONSE",
      `${what} answered /dashboard/data without workloads and proxies`,
    );
  }
  return {
    url: `http://${hostText}:${port}/dashboard`,
    workloads: record.workloads.length,
    edges: Array.isArray(record.edges) ? record.edges.length : 0,
    proxies: record.proxies.map((p) => {
      const x = (p ?? {}) as Record<string, unknown>;
      return { kind: String(x.kind ?? ""), name: String(x.name ?? ""), up: x.up === true };
    }),
  };
}

/** The path of `program` on `PATH`, if it is there and executable. */
export function findOnPath(program: string, path: string | undefined): string | undefined {
  for (const dir of (path ?? "").split(delimiter)) {
    if (dir === "") continue;
    const file = join(dir, program);
    try {
      accessSync(file, constants.X_OK);
      return file;
    } catch {
      // not in this folder
    }
  }
  return undefined;
}

/** Why the page was or was not opened. */
export type OpenOutcome = "opened" | "not a terminal" | "no xdg-open" | "disabled";

/**
 * Opens `url` with xdg-open, detached, only when the output is a terminal (a person is there, not a
 * script or CI) and xdg-open is on `PATH`.
 */
export function openInBrowser(
  url: string,
  options: { isTTY: boolean; path: string | undefined; enabled?: boolean },
): OpenOutcome {
  if (options.enabled === false) return "disabled";
  if (!options.isTTY) return "not a terminal";
  const xdgOpen = findOnPath("xdg-open", options.path);
  if (xdgOpen === undefined) return "no xdg-open";
  const child = spawn(xdgOpen, [url], { detached: true, stdio: "ignore" });
  child.on("error", () => {});
  child.unref();
  return "opened";
}
