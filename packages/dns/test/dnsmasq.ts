// dnsmasq as the independent upstream resolver of the forwarder tests, on a free 127.0.0.1 port.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { decodeMessage, encodeMessage } from "../src/index.js";
import { freePort, makeQuery, udpExchange } from "./sockets.js";

/** A running dnsmasq. */
export interface Dnsmasq {
  readonly port: number;
  stop(): Promise<void>;
}

/** Whether dnsmasq is installed (scripts/test-prerequisites.mjs installs it). */
export const hasDnsmasq = await new Promise<boolean>((resolve) =>
  execFile("dnsmasq", ["--version"], (err) => resolve(!err)),
);

/**
 * Starts dnsmasq answering `example.test` (and below) with 192.0.2.7, `big.test` with 192.0.2.1 and
 * 192.0.2.2, NXDOMAIN under `nx.test`, REFUSED for the rest (it has no upstream). Tries other ports if
 * one is taken meanwhile.
 */
export async function startDnsmasq(): Promise<Dnsmasq> {
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const child = spawn(
      "dnsmasq",
      [
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--no-resolv",
        "--no-hosts",
        "--bind-interfaces",
        "--listen-address=127.0.0.1",
        `--port=${port}`,
        "--pid-file=",
        "--user=root",
        "--address=/example.test/192.0.2.7",
        "--local=/nx.test/",
        "--host-record=big.test,192.0.2.1",
        "--host-record=big.test,192.0.2.2",
      ],
      { stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr?.on("data", (chunk: Buffer) => {
      stderr += chunk.toString();
    });
    const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
    if (await answers(port, child)) {
      return {
        port,
        async stop() {
          if (child.exitCode === null) child.kill("SIGTERM");
          await exited;
        },
      };
    }
    child.kill("SIGKILL");
    await exited;
    if (attempt >= 3) throw new Error(`dnsmasq did not start: ${stderr}`);
  }
}

/** Polls until dnsmasq answers a query (for at most 5 s) or exits. */
async function answers(port: number, child: ChildProcess): Promise<boolean> {
  const query = encodeMessage(makeQuery("example.test"));
  const deadline = Date.now() + 5000;
  while (Date.now() < deadline && child.exitCode === null) {
    const reply = await udpExchange(port, query, 200);
    if (reply !== undefined && decodeMessage(reply).answers.length === 1) return true;
  }
  return false;
}
