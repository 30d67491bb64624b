// dig as the independent DNS client of the server tests.
import { execFile } from "node:child_process";

/** What dig printed, with the header's status and flags picked out. */
export interface DigResult {
  readonly stdout: string;
  /** `NOERROR`, `NXDOMAIN`, ... */
  readonly status: string | undefined;
  /** Header flags: `qr`, `aa`, `tc`, `rd`, `ra`, ... */
  readonly flags: readonly string[];
  /** The answer section's data column (addresses, targets). */
  readonly answers: readonly string[];
  /** The id of the header dig printed. */
  readonly id: number | undefined;
}

/** Whether dig is installed (scripts/test-prerequisites.mjs installs it). */
export const hasDig = await new Promise<boolean>((resolve) =>
  execFile("dig", ["-v"], (err) => resolve(!err)),
);

/** Runs `dig @127.0.0.1 -p port +tries=1 +time=2 ...args` and parses its output. */
export function dig(port: number, args: readonly string[]): Promise<DigResult> {
  return new Promise((resolve, reject) => {
    execFile(
      "dig",
      ["@127.0.0.1", "-p", String(port), "+tries=1", "+time=2", "+nocookie", ...args],
      { timeout: 10_000 },
      (err, stdout) => {
        // dig exits 9 when no server answered; the output still tells what happened.
        if (err && stdout === "") {
          reject(err);
          return;
        }
        const header = /status: (\w+), id: (\d+)/.exec(stdout);
        const flags = /;; flags: ([a-z ]+);/.exec(stdout)?.[1]?.trim().split(" ") ?? [];
        const section = /;; ANSWER SECTION:\n([\s\S]*?)\n\n/.exec(stdout)?.[1] ?? "";
        const answers = section
          .split("\n")
          .filter((line) => line !== "")
          .map((line) => line.split(/\s+/).slice(4).join(" "));
        resolve({ stdout, status: header?.[1], flags, answers, id: header ? Number(header[2]) : undefined });
      },
    );
  });
}
