// Test helpers: run the CLI in-process with captured output, and serve recorded ztunnel dumps.
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { runCli } from "./cli.js";

export interface CliRun {
  code: number;
  stdout: string;
  stderr: string;
}

export async function run(
  argv: string[],
  options: { tty?: boolean; env?: Record<string, string | undefined> } = {},
): Promise<CliRun> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(argv, {
    stdout: {
      isTTY: options.tty ?? false,
      write: (t: string) => {
        stdout += t;
      },
    },
    stderr: {
      write: (t: string) => {
        stderr += t;
      },
    },
    env: options.env ?? {},
  });
  return { code, stdout, stderr };
}

/** An HTTP server on 127.0.0.1 (ephemeral port) answering `/config_dump` with `body`. */
export async function serveDump(
  body: string,
  status = 200,
): Promise<{ address: string; close(): Promise<void> }> {
  const server: Server = createServer((req, res) => {
    if (req.url === "/config_dump") res.writeHead(status, { "content-type": "application/json" }).end(body);
    else res.writeHead(404).end("not found\n");
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** A temporary folder with `files` (name -> text); `remove` deletes it. */
export async function tempManifests(
  files: Record<string, string>,
): Promise<{ dir: string; remove(): Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), "ambient-cli-"));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** The repository's demo mesh manifests. */
export const MESH_DIR = new URL("../../../mesh/", import.meta.url).pathname;
